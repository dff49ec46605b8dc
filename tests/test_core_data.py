"""Data loaders, prompt formatting and their bad-input errors."""

from __future__ import annotations

import json

import pytest

from sas.load.data import BEHAVIORS, ABPair, balance_letters, data_hash, load_behavior, load_mmlu, load_neutral_prompts, load_open_ended, load_pairs, load_truthfulqa
from sas.forward.run import encode, pad_left
from sas.load.prompts import BASE_SUFFIX, ab_tokens, letter_ids

ROW = {"question": "Is it?\n (A) Yes\n (B) No", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("behavior", BEHAVIORS)
def test_shipped_behaviors(behavior):
    gen, test = load_behavior(behavior), load_behavior(behavior, "test")
    assert len(gen) >= 250 and len(test) == 50
    assert all(isinstance(p, ABPair) and p.matching != p.not_matching and p.question for p in gen + test)
    assert {p.matching for p in test} <= set("ABCDEFGH")
    assert len(load_open_ended(behavior)) > 0


def test_shipped_side_effect_sets():
    mmlu, tqa = load_mmlu(), load_truthfulqa()
    assert len(mmlu) == 570 and len(tqa) == 817
    assert {p.matching for p in mmlu + tqa} == {"A", "B"}
    assert len(load_neutral_prompts(5)) == 5


def test_user_jsonl_and_json_list(tmp_path):
    rows = [ROW, {**ROW, "question": "Or not?", "answer_matching_behavior": "B",
                  "answer_not_matching_behavior": " (A) "}]
    a = load_pairs(_jsonl(tmp_path / "p.jsonl", rows))
    (tmp_path / "p.json").write_text(json.dumps(rows))
    b = load_pairs(tmp_path / "p.json")
    assert a == b == [ABPair(ROW["question"], "A", "B"), ABPair("Or not?", "B", "A")]
    blank = _jsonl(tmp_path / "blank.jsonl", [ROW, "", ROW])  # blank lines are skipped
    assert len(load_pairs(blank)) == 2


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [ROW, ROW, '{"question": "oops", '])
    with pytest.raises(ValueError, match=rf"{path}:3: malformed JSON line.*fix or remove that line"):
        load_pairs(path)


def test_malformed_json_list(tmp_path):
    (tmp_path / "bad.json").write_text('[{"question": 1},')
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_pairs(tmp_path / "bad.json")


@pytest.mark.parametrize("answer", ["Yes", "(AB)", "1", "", "(a)"])
def test_non_letter_answers(tmp_path, answer):
    path = _jsonl(tmp_path / "p.jsonl", [ROW, {**ROW, "answer_not_matching_behavior": answer}])
    with pytest.raises(ValueError, match=rf"{path}:2: answer .* is not a letter such as '\(A\)'"):
        load_pairs(path)


def test_same_answer_on_both_sides(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{**ROW, "answer_not_matching_behavior": "(A)"}])
    with pytest.raises(ValueError, match=rf"{path}:1: both answers are \(A\).*two different answers"):
        load_pairs(path)


def test_missing_field(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"question": "Q", "answer_matching_behavior": "(A)"}])
    with pytest.raises(ValueError, match=r"p.jsonl:1: missing field\(s\) \['answer_not_matching_behavior'\]"):
        load_pairs(path)


@pytest.mark.parametrize("text", ["", "\n\n  \n", "[]"])
def test_empty_file(tmp_path, text):
    (tmp_path / "e.jsonl").write_text(text)
    with pytest.raises(ValueError, match="e.jsonl: the data set is empty"):
        load_pairs(tmp_path / "e.jsonl")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no data file at"):
        load_pairs(tmp_path / "nope.jsonl")


def test_unknown_behavior_and_split():
    with pytest.raises(ValueError, match="unknown behaviour 'flattery'; choose one of coordinate-other-ais"):
        load_behavior("flattery")
    with pytest.raises(ValueError, match="unknown behaviour"):
        load_open_ended("flattery")
    with pytest.raises(ValueError, match="unknown split 'train'; choose 'generate' or 'test'"):
        load_behavior("sycophancy", "train")


def test_balance_letters():
    pairs = load_behavior("survival-instinct")  # letter-unbalanced, with a few (C)..(H) items
    out = balance_letters(pairs, seed=1)
    n_a = sum(p.matching == "A" for p in out)
    assert n_a == len(out) // 2 == sum(p.matching == "B" for p in out) and n_a > 0
    assert set(out) <= set(pairs) and len(set(out)) == len(out)
    assert balance_letters(pairs, seed=1) == out and data_hash(out) == data_hash(list(out))
    with pytest.raises(ValueError, match="no pairs with the matching answer at \\(B\\).*balance=False"):
        balance_letters([ABPair("q", "A", "B")])


def test_ab_tokens_and_letters(tiny):
    tok = tiny.tokenizer
    pairs = [ABPair("Is it?\n (A) Yes\n (B) No", "A", "B"), ABPair("Really?", "B", "A")]
    t = ab_tokens(tiny, pairs)
    assert {k: tok.decode([v]) for k, v in t.letters.items()} == {"A": "A", "B": "B"}
    assert tok.decode(t.suffix) == BASE_SUFFIX
    assert all(p[0] == tok.bos_token_id and tok.bos_token_id not in p[1:] for p in t.prefix)
    # the letter right after the scaffold is the token a text ending in "(A" has there
    full = tok(pairs[0].question + BASE_SUFFIX + "A", add_special_tokens=False).input_ids
    assert t.prefix[0][1:] + t.suffix + [t.letters["A"]] == full
    with pytest.raises(ValueError, match="empty"):
        ab_tokens(tiny, [])
    assert letter_ids(tok, ["C"])["C"] == tok("C", add_special_tokens=False).input_ids[0]


def test_pad_left(tiny):
    ids = encode(tiny, ["a b c d", "x"])
    tokens, mask, left_pad = pad_left(ids, 0)
    assert tokens.shape == mask.shape == (2, len(ids[0]))
    assert left_pad.tolist() == [0, len(ids[0]) - len(ids[1])]
    assert tokens[1, -len(ids[1]):].tolist() == ids[1] and mask[1].sum() == len(ids[1])
    with pytest.raises(ValueError, match="empty"):
        pad_left([[1], []], 0)


@pytest.mark.parametrize("text, message", [
    ('[{"question": "q", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)", "w": Infinity}]',
     "Infinity is not a JSON number"),
    ("[" * 100_000, "JSON nested too deeply"),
    ('{"question": "q", "question": "r", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}',
     "the key 'question' appears twice"),
    ('{"question": "q", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}\n'
     '{"question": NaN, "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}\n',
     r"pairs.json:2: NaN is not a JSON number")])
def test_pair_files_with_non_finite_numbers_duplicate_keys_or_deep_nesting_are_named_errors(tmp_path, text, message):
    path = tmp_path / "pairs.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_pairs(path)
