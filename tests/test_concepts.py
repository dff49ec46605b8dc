"""sas.concepts: the concept schema, user concept files, the offline scorers, the tuning/test split (no model)."""

import hashlib
import json

import pytest
import yaml

from sas.concepts import (SCORERS, ContrastivePair, concept_from_dict, get_concept, get_scorer, load_concept,
                          prompt_pool, shipped_concepts, split_of, steering_prompts)


def _pairs(n=64):
    return [{"positive": f"Let's talk about wedding number {i}", "negative": f"Let's talk about invoice number {i}"}
            for i in range(n)]


def _concept(**kw):
    d = {"name": "mine", "pairs": _pairs(), "scorer": {"name": "lexicon", "words": ["wedding", "bride"]},
         "prefix": "The following text is about weddings.\n\n"}
    d.update(kw)
    return concept_from_dict(d)


# --- schema validation ---------------------------------------------------------------------------------

def test_a_valid_concept_builds_its_scorer_and_texts():
    c = _concept()
    assert len(c.pairs) == 64 and c.positive_texts()[0].endswith("wedding number 0")
    assert c.concept_words == ["wedding", "bride"]  # a lexicon's words are the concept's words by default
    assert c.scorer().score(["the bride smiled", "the invoice"]) == [1.0, 0.0]
    assert c.data_hash == _concept().data_hash != _concept(prefix="Weddings:\n").data_hash


def test_unknown_scorer_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown scorer 'sentimentz'.*language, lexicon, vader"):
        _concept(scorer="sentimentz")


def test_unknown_scorer_setting_is_named():
    with pytest.raises(ValueError, match=r"scorer 'vader' has no setting\(s\) \['target'\]"):
        _concept(scorer={"name": "vader", "target": "fr"})
    with pytest.raises(ValueError, match="direction must be"):
        _concept(scorer={"name": "vader", "direction": 2})
    with pytest.raises(ValueError, match="needs `words`"):
        _concept(scorer={"name": "lexicon"})


def test_too_few_pairs_and_a_configurable_minimum():
    with pytest.raises(ValueError, match="63 contrastive pairs, fewer than the minimum 64"):
        _concept(pairs=_pairs(63))
    assert len(_concept(pairs=_pairs(10), min_pairs=10).pairs) == 10


def test_pairs_equal_on_both_sides_are_refused():
    pairs = _pairs()
    pairs[5] = {"positive": "same text", "negative": "same text "}
    with pytest.raises(ValueError, match=r"pair\(s\) \[5\] have the same text on both sides"):
        _concept(pairs=pairs)
    with pytest.raises(ValueError, match="same text on both sides"):  # with a shared prompt, equal completions
        _concept(pairs=[{"prompt": "Q: ", "positive": "a", "negative": "a"}] + _pairs(63))


def test_prompt_with_two_completions():
    pairs = [{"prompt": f"Story {i}: ", "positive": "the bride", "negative": "the printer"} for i in range(64)]
    c = _concept(pairs=pairs)
    assert c.pairs[3] == ContrastivePair("the bride", "the printer", "Story 3: ")
    assert c.positive_texts()[3] == "Story 3: the bride" and c.negative_texts()[3] == "Story 3: the printer"


def test_steering_prompts_that_contain_the_concept_words_are_refused():
    with pytest.raises(ValueError, match=r"1 steering prompt\(s\) already contain the concept's words.*'Weddings'"):
        _concept(prompts=["The report said", "Weddings are", "He walked to"])


def test_missing_and_unknown_fields():
    with pytest.raises(ValueError, match=r"missing field\(s\) \['scorer', 'prefix'\]"):
        concept_from_dict({"name": "x", "pairs": _pairs()})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['scorers'\]"):
        _concept(scorers="vader")
    with pytest.raises(ValueError, match="`prefix` is empty"):
        _concept(prefix="  ")
    with pytest.raises(ValueError, match=r"pair 2: missing field\(s\) \['negative'\]"):
        _concept(pairs=_pairs()[:2] + [{"positive": "x"}] + _pairs()[3:])
    with pytest.raises(ValueError, match="`name` must be"):
        _concept(name="My Concept")
    with pytest.raises(ValueError, match="`prompts` is .neutrall., which is neither"):
        _concept(prompts="neutrall")


# --- files ---------------------------------------------------------------------------------------------

def test_user_concept_file_yaml(tmp_path):
    d = {"name": "volcanoes", "description": "volcanoes", "prefix": "About volcanoes:\n\n",
         "scorer": {"name": "lexicon", "words": ["volcano", "lava", "eruption", "magma"]},
         "pairs": [[f"The volcano number {i}", f"The sofa number {i}"] for i in range(64)]}
    path = tmp_path / "volcanoes.yaml"
    path.write_text(yaml.safe_dump(d))
    c = get_concept(path)
    assert c.name == "volcanoes" and c.scorer_name == "lexicon" and len(c.pairs) == 64
    assert c.scorer().score(["Lava flowed after the eruptions.", "It was calm."]) == [1.0, 0.0]
    assert steering_prompts(c, "test", 100)  # the default pool, without prompts that mention volcanoes
    path.write_text("name: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_concept(path)


def test_user_concept_file_jsonl_with_own_prompts(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Prompt number {i} says" for i in range(300)))
    head = {"name": "pirates", "scorer": "vader", "scorer_settings": {"direction": -1},
            "prefix": "Angry text:\n\n", "prompts": "prompts.txt", "concept_words": ["angry"]}
    lines = [json.dumps(head)] + [json.dumps({"positive": f"I am furious {i}", "negative": f"I am calm {i}"})
                                  for i in range(70)]
    path = tmp_path / "pirates.jsonl"
    path.write_text("\n".join(lines) + "\n")
    c = load_concept(path)
    assert c.scorer_settings == {"direction": -1} and len(c.pairs) == 70 and len(c.prompts) == 300
    assert c.scorer().score(["I hate this."])[0] > 0.3  # direction -1: negative sentiment scores high
    tuning, test = steering_prompts(c, "tuning"), steering_prompts(c, "test")
    assert sorted(tuning + test) == sorted(c.prompts)
    path.write_text("\n".join(lines[1:]))
    with pytest.raises(ValueError, match="no header line"):
        load_concept(path)
    path.write_text("\n".join(lines[:3] + ["{broken"]))
    with pytest.raises(ValueError, match=r"pirates.jsonl:4: malformed JSON"):
        load_concept(path)
    with pytest.raises(ValueError, match="unknown concept file type"):
        load_concept(prompts)
    with pytest.raises(FileNotFoundError):
        load_concept(tmp_path / "nope.yaml")


def test_unknown_shipped_concept():
    with pytest.raises(ValueError, match="unknown concept 'weddingz'; choose one of .*weddings"):
        get_concept("weddingz")


def test_shipped_concepts_meet_the_issue():
    cs = shipped_concepts()
    assert len(cs) >= 12
    assert {"sentiment-positive", "sentiment-negative", "weddings", "french"} <= set(cs)
    topics = [c for c in cs.values() if c.scorer_name == "lexicon"]
    assert len(topics) >= 8
    for c in cs.values():
        assert len(c.pairs) >= 64 and c.license and c.prefix.strip()
        assert len(steering_prompts(c, "test")) >= 100 and len(steering_prompts(c, "tuning")) >= 100
    for c in topics:
        assert 30 <= len(c.scorer().words) <= 80, c.name
        assert all(c.scorer().score(c.positive_texts())), f"{c.name}: a positive text misses the lexicon"
        assert not any(c.scorer().score(c.negative_texts())), f"{c.name}: a negative text mentions the topic"
    pos, neg = cs["sentiment-positive"], cs["sentiment-negative"]
    assert pos.positive_texts() == neg.negative_texts() and pos.negative_texts() == neg.positive_texts()
    assert pos.scorer_settings["direction"] == 1 and neg.scorer_settings["direction"] == -1


def test_the_tasks_are_concepts_and_their_old_path_warns():
    """`--task sentiment` and `--task topic` name concepts: sentiment keeps the task's 100 pairs, ActAdd's Love/Hate
    and every neutral prompt, outside the benchmark's default concepts; topic is weddings; any concept works."""
    import sys

    import sas
    from sas.concepts import TASKS, task_concept, task_prompts
    from sas.concepts.tasks import sentiment_pairs
    from sas.evaluation.concept import mask_words, run_task
    from sas.load.data import load_neutral_prompts

    s = task_concept("sentiment")
    assert set(TASKS) == {"sentiment", "topic"} and "sentiment" not in shipped_concepts()
    assert s.scorer_name == "vader" and s.scorer_settings == {"direction": 1} and s.actadd_pair == ("Love", "Hate")
    assert len(s.pairs) == 100 and s.pairs[0].texts == ("I feel good", "I feel bad")
    assert s.pairs[-1].texts == ("This is triumphant", "This is defeated")
    assert s.scorer().score(["What a wonderful day!"])[0] > 0.5  # VADER, from the one scorer registry
    assert task_prompts(s, 40) == load_neutral_prompts(40)  # the task's prompts: the first of the pool
    with pytest.raises(ValueError, match="fewer than the 99999 asked for"):
        task_prompts(s, 99999)
    assert task_concept("topic") is get_concept("weddings") and task_concept("ocean").name == "ocean"
    sys.modules.pop("sas.evaluation.tasks", None)
    with pytest.warns(DeprecationWarning, match="sas.evaluation.tasks moved to sas.concepts.tasks"):
        import sas.evaluation.tasks as old
    assert old.sentiment_pairs is sentiment_pairs and old.run_task is run_task and old.mask_words is mask_words
    assert old.sentiment_pairs() == (s.positive_texts(), s.negative_texts()) and sas.run_task is run_task


def test_a_broken_concept_file_after_task_is_refused_naming_the_problem(tmp_path, capsys):
    from sas.cli import parser

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "pairs": _pairs(), "prefix": "About weddings.\n\n"}))
    with pytest.raises(SystemExit):
        parser().parse_args(["sweep", "--task", str(bad)])
    assert "missing field(s) ['scorer']" in capsys.readouterr().err


# --- scorers -------------------------------------------------------------------------------------------

def test_registry_and_type_errors():
    assert {"vader", "lexicon", "language"} <= set(SCORERS)
    with pytest.raises(TypeError, match="list of texts"):
        get_scorer("vader").score("one string")


def test_vader_direction():
    texts = ["What a wonderful, happy day. I love it!", "This is awful, I hate it and I am sad.", "The bus left."]
    up, down = get_scorer("vader", direction=1).score(texts), get_scorer("vader", direction=-1).score(texts)
    assert up[0] > 0.5 and up[1] < -0.5 and up[2] == 0.0
    assert down == [-x for x in up]


def test_lexicon_word_boundaries_and_inflections():
    s = get_scorer("lexicon", words=["cat", "recipe", "bake", "wedding cake", "puppy"])
    texts = ["Cats and a category.", "She baked two recipes.", "Our wedding  cakes were huge", "The puppies slept",
             "concatenate the scatter plot", "pre-bake?", ""]
    d = s.details(texts)
    assert d["mention"] == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert d["count"] == [1.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert d["rate"][1] == pytest.approx(2 / 4) and d["rate"][-1] == 0.0
    assert s.score(texts) == d["mention"]
    # derivations are not inflections: "pet" must not match "Peter"
    assert get_scorer("lexicon", words=["pet"]).score(["Peter came", "my pets"]) == [0.0, 1.0]


def test_language_identifier():
    s = get_scorer("language", target="fr")
    texts = ["Je pense que nous devrions partir demain matin avant la pluie.",
             "I think we should leave tomorrow morning before the rain.", "ok", ""]
    d = s.details(texts)
    assert d["identified"] == [1.0, 0.0, 0.0, 0.0]
    assert d["probability"][0] > 0.9 > 0.1 > d["probability"][1]
    assert get_scorer("language", target="es", languages=["en", "es"]).score(
        ["Creo que deberíamos salir mañana por la mañana."]) == [1.0]
    with pytest.raises(ValueError, match=r"does not know the language code\(s\) \['xx'\]"):
        get_scorer("language", target="xx")
    from sas.concepts.scorers import LANGID_CODES, _langid
    assert LANGID_CODES == set(_langid(None).nb_classes)  # the constant list is py3langid's own
    assert _langid(("en", "es")).nb_classes == ["en", "es"] and len(_langid(None).nb_classes) > 100


# --- steering prompts ----------------------------------------------------------------------------------

def test_split_is_disjoint_deterministic_and_by_hash():
    c = get_concept("weddings")
    tuning, test = steering_prompts(c, "tuning"), steering_prompts(c, "test")
    kept, excluded = prompt_pool(c)
    assert not set(tuning) & set(test) and sorted(tuning + test) == sorted(kept)
    assert steering_prompts(c, "test", 150) == test[:150] == steering_prompts(get_concept("weddings"), "test", 150)
    p = test[0]
    h = int(hashlib.sha256(p.encode()).hexdigest()[:16], 16) / 2 ** 64
    assert split_of(p) == "test" and h >= 0.5
    # the split depends on the prompt only: another concept puts the same prompt in the same half
    assert p in steering_prompts(get_concept("space"), "test") or get_concept("space").mentions_concept(p)
    with pytest.raises(ValueError, match="unknown split"):
        steering_prompts(c, "train")
    with pytest.raises(ValueError, match=r"has \d+ test prompts .* fewer than the 100000"):
        steering_prompts(c, "test", 100000)


def test_prompts_with_concept_words_are_excluded():
    c = get_concept("weddings")
    kept, excluded = prompt_pool(c)
    assert "At 30 he was married with one son" in excluded
    assert excluded and all(c.mentions_concept(p) for p in excluded)
    assert not any(c.mentions_concept(p) for p in kept)
    assert not any(c.scorer().score(kept))
    fr = get_concept("french")  # its concept words are given in the file, not by the scorer
    assert any("Paris" in p for p in prompt_pool(fr)[1]) and not any("France" in p for p in prompt_pool(fr)[0])


# --- with the real model -------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_shipped_concept_steers_gemma(gemma):
    """A CAA vector from the weddings pairs (layer 6, an edit of 0.2x the mean residual norm) makes
    continuations of tuning prompts mention weddings; unsteered they do not (concept check: 0.00 -> 0.90)."""
    import sas
    from sas.activations.residual import last_token_activations

    c = get_concept("weddings")
    prompts = steering_prompts(c, "tuning", 12)
    vec = sas.contrastive_vector(gemma, c.positive_texts(), c.negative_texts(), layers=[6], positions="after_prompt")
    resid = float(last_token_activations(gemma, prompts, [6], reduce="mean")[6].norm(dim=-1).mean())
    gen = dict(max_new_tokens=24, do_sample=True, top_k=50, seed=0)
    before = c.scorer().score(sas.generate(gemma, prompts, **gen))
    with sas.steer(gemma, vec, multipliers=0.2 * resid / float(vec.directions[6].norm())):
        after = c.scorer().score(sas.generate(gemma, prompts, **gen))
    assert sum(after) / len(after) >= sum(before) / len(before) + 0.4, (before, after)


# --- files from someone else -----------------------------------------------------------------------------

def _file(tmp_path, name="c.yaml", **kw):
    d = {"name": "mine", "pairs": _pairs(), "scorer": {"name": "lexicon", "words": ["wedding", "bride"]},
         "prefix": "About weddings:\n\n", **kw}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(d) if name.endswith(".yaml") else json.dumps(d))
    return path


def test_a_prompts_file_must_lie_beside_the_concept_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "c").mkdir()
    for name in ("/etc/passwd", str(secret), "../secret.txt"):
        with pytest.raises(ValueError, match="outside the concept file's folder.*put the prompts file beside"):
            load_concept(_file(tmp_path / "c", prompts=name))
    (tmp_path / "c" / "link.txt").symlink_to(secret)  # a link inside pointing outside is outside
    with pytest.raises(ValueError, match="outside the concept file's folder"):
        load_concept(_file(tmp_path / "c", prompts="link.txt"))
    (tmp_path / "c" / "sub").mkdir()
    (tmp_path / "c" / "sub" / "p.txt").write_text("The road was\nHe said\n")
    assert load_concept(_file(tmp_path / "c", prompts="sub/p.txt")).prompts == ["The road was", "He said"]
    with pytest.raises(ValueError, match=r"'sub', and .* is not a file \(a folder\?\)"):
        load_concept(_file(tmp_path / "c", prompts="sub"))


# anchors inside `concept_words`: 9^6 words once expanded, from a file of 1 KB (nine levels: 9^9, gigabytes)
BOMB = "concept_words:\n" + "".join(f"  - &l{i} [" + ", ".join([f"*l{i - 1}"] * 9 if i else ["lol"] * 9) + "]\n"
                                    for i in range(6))


def test_yaml_aliases_are_refused_at_load_and_before_the_model_loads(tmp_path, capsys):
    import time

    import sas.cli as cli

    path = tmp_path / "bomb.yaml"
    path.write_text(yaml.safe_dump({"name": "bomb", "pairs": _pairs(), "scorer": "vader", "prefix": "Hi:\n"})
                    + BOMB)
    t0 = time.time()
    with pytest.raises(ValueError, match=r"bomb.yaml: line \d+: a YAML alias"):
        load_concept(path)
    with pytest.raises(SystemExit):
        cli.main(["bench", "--concept", str(path)])
    assert "a YAML alias" in capsys.readouterr().err
    assert time.time() - t0 < 10


def test_concept_file_validation(tmp_path):
    with pytest.raises(ValueError, match="`min_pairs` must be a whole number of at least 8, not 0"):
        _concept(pairs=_pairs(1), min_pairs=0)
    with pytest.raises(ValueError, match=r"c.yaml.*`min_pairs` must be a whole number.*not 'many'"):
        load_concept(_file(tmp_path, min_pairs="many"))
    with pytest.raises(ValueError, match=r"pair\(s\) \[1, 2, 3.* repeat earlier pairs \(pair 1 is pair 0\)"):
        _concept(pairs=[_pairs(1)[0]] * 70)
    with pytest.raises(ValueError, match=r"steering prompt\(s\) \[1\] are not non-empty texts"):
        _concept(prompts=["The road was", "  ", "He said"])
    for bad in ({"a": "The road was"}, [["The road", "was"]], [{"text": "x"}]):
        with pytest.raises(ValueError, match="prompt"):
            _concept(prompts=bad)
    with pytest.raises(ValueError, match="`concept_words` must be a list of words.*not 'wedding'"):
        load_concept(_file(tmp_path, concept_words="wedding"))
    path = tmp_path / "dup.yaml"
    path.write_text(_file(tmp_path).read_text() + "prefix: Other\n")
    with pytest.raises(ValueError, match=r"dup.yaml: line 1: the key 'prefix' appears twice"):
        load_concept(path)
    with pytest.raises(ValueError, match=r"c.yaml\): `prefix` must be text, not int 5"):
        load_concept(_file(tmp_path, prefix=5))
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"dup.yaml: not UTF-8 text"):
        load_concept(path)


def test_bad_json_concept_files_are_named_errors(tmp_path):
    path = tmp_path / "c.json"
    d = json.loads(_file(tmp_path, name="c.json").read_text())
    path.write_text(json.dumps({**d, "min_pairs": 1e999}))  # written as Infinity
    with pytest.raises(ValueError, match="c.json: Infinity is not a JSON number"):
        load_concept(path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="c.json: JSON nested too deeply"):
        load_concept(path)
    path.write_text(json.dumps(d)[:-1] + ', "name": "again"}')
    with pytest.raises(ValueError, match="the key 'name' appears twice"):
        load_concept(path)
    jl = tmp_path / "c.jsonl"
    jl.write_text('{"name": "x", "prefix": "p", "scorer": "vader", "min_pairs": NaN}\n')
    with pytest.raises(ValueError, match="c.jsonl:1: NaN is not a JSON number"):
        load_concept(jl)
    jl.write_text("[" * 100_000 + "\n")
    with pytest.raises(ValueError, match="c.jsonl:1: JSON nested too deeply"):
        load_concept(jl)
