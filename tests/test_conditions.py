"""Conditional steering: a condition (a dense direction with a threshold, or SAE features with thresholds) read in
the forward pass that steers, so that only the rows (or tokens) where it holds are edited.

Fast tests run on the tiny random model and a random JumpReLU SAE; the real case (gemma-3-270m, a shipped SAE,
held-out prompts) is scripts/conditions_eval.py and the slow tests at the end."""

from __future__ import annotations

import math

import pytest
import torch

import sas
from sas.steering.condition import Condition, condition_from_texts, load_condition
from sas.steering.steer import SteeringError
from test_reliability import random_sae

COOKING = ["I baked bread in the kitchen", "The recipe needs garlic and onion", "Simmer the soup for an hour",
           "Fry the fish in butter", "The chef roasted a chicken", "Boil the pasta in salted water"]
OTHER = ["The train left the station", "She paid the invoice today", "The meeting ran late", "He fixed the roof",
         "We drove to the city", "The printer is broken"]


def _between(model, cond_kwargs, prompts):
    """A direction condition at layer 1 whose threshold lies between the scores of ``prompts``: the first half
    fires, the second does not."""
    torch.manual_seed(1)
    c = Condition("direction", 1, "tiny", direction=torch.randn(32), **cond_kwargs)
    from sas.steering.condition import _prompt_reads

    _, reads = _prompt_reads(model, prompts, c)
    scores = c._reader()(reads).sort(descending=True).values
    c.threshold = float((scores[len(prompts) // 2 - 1] + scores[len(prompts) // 2]) / 2)
    return c


def test_a_prompt_condition_steers_only_the_rows_where_it_holds(tiny):
    """Rows where the condition does not hold get the unsteered text and zero edits in the receipt; the others
    are steered. The decision made in the steering pass equals Condition.fires on the same prompts."""
    prompts = COOKING[:3] + OTHER[:3]
    c = _between(tiny, {}, prompts)
    fires = c.fires(tiny, prompts)
    assert 0 < int(fires.sum()) < len(prompts)
    torch.manual_seed(0)
    v = sas.SteeringVector({2: torch.randn(32) * 8}, "tiny", "caa")
    receipt = sas.Receipt(rows=len(prompts))
    with sas.steer(tiny, v, 1.0, condition=c, receipt=receipt):
        steered = sas.generate(tiny, prompts, max_new_tokens=5)
    plain = sas.generate(tiny, prompts, max_new_tokens=5)
    for i, on in enumerate(fires.tolist()):
        edits = receipt.row(i)["2"]["positions"]
        if on:
            assert edits == 5 and steered[i] != plain[i], i
        else:
            assert edits == 0 and steered[i] == plain[i], i


def test_a_token_condition_edits_exactly_the_tokens_where_its_features_fire(tiny):
    """Per token: the edited positions at the steered layer are the positions where a feature of the condition is
    active above its threshold at the condition's layer, counted independently with the SAE's own encoder."""
    sae = random_sae(1, 32, 64, 0, "tiny", apply_b_dec_to_input=True)
    c = Condition("features", 1, "tiny", scope="token", features=[5, 17, 40], thresholds=[0.2, 0.0, 0.5], sae=sae)
    tokens = tiny.to_tokens(COOKING[:2] + OTHER[:2])  # right-padded rows: every position counts (no sas.forward)
    _, cache = tiny.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
    z = sae.encode(cache["blocks.1.hook_resid_post"])[..., [5, 17, 40]]
    want = (z > torch.tensor([0.2, 0.0, 0.5])).any(-1)
    assert 0 < int(want.sum()) < want.numel()
    receipt = sas.Receipt(rows=len(tokens))
    v = sas.SteeringVector({2: torch.ones(32)}, "tiny", "caa", positions="all")
    with sas.steer(tiny, v, 1.0, condition=c, receipt=receipt):
        tiny(tokens)
    assert [receipt.row(i)["2"]["positions"] for i in range(len(tokens))] == want.sum(1).tolist()


@pytest.mark.parametrize("arch", ["jumprelu", "topk"])
def test_a_feature_condition_reads_what_the_saes_own_encode_gives(tiny, arch):
    """The condition's reader agrees with ``sae.encode`` token by token, for JumpReLU (read from the condition's
    columns only) and TopK (a feature fires only among the k largest: the full encode decides). On TopK the
    pre-activation alone would say a feature fires at tokens where encode gives 0; the test checks such tokens
    exist, so reading the pre-activation would fail it."""
    from test_sparse import random_sae as random_arch_sae

    sae = random_arch_sae(32, 64, 1, arch, seed=3)
    feats, ths = [5, 17, 40, 41], [0.0, 0.1, 0.0, 0.2]
    c = Condition("features", 1, "tiny", scope="token", features=feats, thresholds=ths, sae=sae)
    _, cache = tiny.run_with_cache(tiny.to_tokens(COOKING + OTHER), names_filter="blocks.1.hook_resid_post")
    x = cache["blocks.1.hook_resid_post"]
    want = (sae.encode(x)[..., feats] > torch.tensor(ths)).any(-1)
    assert 0 < int(want.sum()) < want.numel()
    assert torch.equal(c._reader()(x), want)
    if arch == "topk":
        x_in = x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x
        pre = (x_in @ sae.W_enc + sae.b_enc)[..., feats]
        assert bool(((pre > torch.tensor(ths)).any(-1) & ~want).any())


def test_a_prompt_condition_read_after_the_steered_layer_applies_from_the_first_new_token(tiny):
    """Condition at layer 2, steering at layer 1: the prompt's pass reaches layer 1 before the decision, so the
    firing rows are edited from the first generation step on (4 new tokens: 3 edited steps), the others never."""
    prompts = COOKING[:2] + OTHER[:2]
    c = _between(tiny, {}, prompts)
    c.layer = 2
    from sas.steering.condition import _prompt_reads

    _, reads = _prompt_reads(tiny, prompts, c)
    scores = c._reader()(reads)
    c.threshold = float(scores.median())
    fires = scores > c.threshold
    receipt = sas.Receipt(rows=len(prompts))
    v = sas.SteeringVector({1: torch.ones(32)}, "tiny", "caa")
    with sas.steer(tiny, v, 1.0, condition=c, receipt=receipt):
        sas.generate(tiny, prompts, max_new_tokens=4)
    assert [receipt.row(i)["1"]["positions"] for i in range(4)] == [3 if f else 0 for f in fires.tolist()]


def test_several_vectors_at_layers_that_do_not_overlap_share_one_condition(tiny):
    prompts = COOKING[:2] + OTHER[:2]
    c = _between(tiny, {}, prompts)
    fires = c.fires(tiny, prompts).tolist()
    a = sas.SteeringVector({1: torch.ones(32)}, "tiny", "caa")
    b = sas.SteeringVector({2: -torch.ones(32)}, "tiny", "caa")
    receipt = sas.Receipt(rows=4)
    with sas.steer(tiny, [a, b], [1.0, 2.0], condition=c, receipt=receipt):
        sas.generate(tiny, prompts, max_new_tokens=3)
    for i, on in enumerate(fires):
        assert {k: v["positions"] > 0 for k, v in receipt.row(i).items()} == {"1": on, "2": on}


def test_conditions_save_and_load_as_vectors_do(tiny, tmp_path):
    sae = random_sae(1, 32, 64, 0, "tiny", apply_b_dec_to_input=True)
    dense = _between(tiny, {"name": "cooking"}, COOKING[:2] + OTHER[:2])
    feats = Condition("features", 1, "tiny", name="cooking-f", scope="token", features=[5, 17], thresholds=[0.25, 1.0],
                      sae=sae)
    back = load_condition(dense.save(tmp_path / "dense"))
    assert back.kind == "direction" and back.threshold == dense.threshold and torch.equal(back.direction,
                                                                                          dense.direction)
    back = load_condition(feats.save(tmp_path / "feats.v1"), sae=sae)  # a dot in the name is part of the name
    assert (back.features, back.thresholds, back.scope, back.sae) == ([5, 17], [0.25, 1.0], "token", sae)
    assert (tmp_path / "feats.v1.json").exists()
    with pytest.raises(ValueError, match="holds a condition, not a steering vector; load it with sas.load_condition"):
        sas.load_vector(tmp_path / "dense")
    sas.SteeringVector({1: torch.ones(32)}, "tiny", "caa").save(tmp_path / "vec")
    with pytest.raises(ValueError, match="holds a steering vector, not a condition"):
        load_condition(tmp_path / "vec")


def test_bad_conditions_are_refused_naming_both_sides(tiny, tmp_path):
    sae = random_sae(1, 32, 64, 0, "tiny", apply_b_dec_to_input=True)
    other = random_sae(1, 32, 64, 1, "tiny", apply_b_dec_to_input=True)
    feats = Condition("features", 1, "tiny", features=[5], thresholds=[0.25], sae=sae, sae_name="mine")
    path = feats.save(tmp_path / "feats")
    with pytest.raises(ValueError, match=r"built in SAE 'mine'.*other weights"):
        load_condition(path, sae=other)
    with pytest.raises(ValueError, match=r"reads .*blocks.2.hook_resid_post.*'blocks.1.hook_resid_post'"):
        load_condition(path, sae=random_sae(2, 32, 64, 0, "tiny"))
    with pytest.raises(ValueError, match="reads layer 2, but its SAE reads layer 1"):
        Condition("features", 2, "tiny", features=[5], thresholds=[0.25], sae=sae)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="threshold must be a finite number"):
            Condition("direction", 1, "tiny", direction=torch.ones(32), threshold=bad)
        with pytest.raises(ValueError, match="threshold of feature 5 must be a finite number"):
            Condition("features", 1, "tiny", features=[5], thresholds=[bad], sae=sae)
    v = sas.SteeringVector({2: torch.ones(32)}, "tiny", "caa")
    wrong_model = Condition("direction", 1, "gemma-3-270m", direction=torch.ones(32))
    with pytest.raises(SteeringError, match="built for gemma-3-270m, not tiny"):
        with sas.steer(tiny, v, 1.0, condition=wrong_model):
            pass
    wide = Condition("direction", 1, "", direction=torch.ones(640))
    with pytest.raises(SteeringError, match="reads width 640, but tiny has d_model 32"):
        with sas.steer(tiny, v, 1.0, condition=wide):
            pass
    late = Condition("direction", 2, "tiny", scope="token", direction=torch.ones(32))
    with pytest.raises(SteeringError, match="decided per token at layer 2, after the steered layer 1"):
        with sas.steer(tiny, sas.SteeringVector({1: torch.ones(32)}, "tiny", "caa"), 1.0, condition=late):
            pass
    with pytest.raises(SteeringError, match="not a condition: str"):
        with sas.steer(tiny, v, 1.0, condition="cooking"):
            pass


def test_a_condition_that_never_fires_on_its_tuning_prompts_is_an_error(tiny):
    """The tuning positives here are the tuning negatives' texts: no threshold tells them apart, and the builder
    says so instead of returning a condition that would never steer (or one that always would)."""
    from sas.steering.condition import _split

    fit, _ = _split(["0", "1", "2", "3"], 0)  # the builder's split of 4 prompts (seed 0)
    pos = [COOKING[i] if str(i) in fit else OTHER[i] for i in range(4)]  # the tuning half: the negatives' texts
    neg = OTHER[:4]  # one batch of 8: equal texts give equal activations
    with pytest.raises(ValueError, match="condition 'cooking' .* fires on none of the 2 positive tuning prompts"):
        condition_from_texts(tiny, pos, neg, layer=1, name="cooking")


@pytest.mark.slow
def test_cooking_conditions_on_gemma_hold_on_held_out_prompts_and_gate_the_real_generation(gemma):
    """gemma-3-270m, layer 9, the shipped SAE gemma-3-270m-L9-16k: both conditions, built on the cooking concept's
    first six sentence frames against office texts, tell held-out frames apart, and in a real steered generation
    exactly the rows where the condition fires are edited."""
    from sas.concepts.schema import get_concept
    from sas.load.saes import load_sae

    cooking = get_concept("cooking")
    pos, neg = cooking.positive_texts(), cooking.negative_texts()  # 12 frames x 8 phrases, frame-major
    build, held = slice(0, 48), slice(48, 96)
    sae = load_sae("gemma-3-270m-L9-16k", gemma)
    v = sas.contrastive_vector(gemma, ["I feel bad", "This is sad"], ["I feel good", "This is happy"], [9])
    prompts = pos[held][::6] + neg[held][::6]  # 8 + 8 held-out prompts
    # the dense form reads the last token: averaged over these short prompts the shared sentence frame dominates
    # (CI measured a tuning balanced accuracy of 0.79 with reduce="mean"; docs/conditions.md has the held-out rates)
    for kw in ({"reduce": "last"}, {"sae": sae, "n_features": 4}):
        c = condition_from_texts(gemma, pos[build], neg[build], 9, name="cooking", **kw)
        assert c.settings["tuning_balanced_accuracy"] >= 0.9, c.settings
        fires = c.fires(gemma, prompts)
        assert fires[:8].float().mean() >= 0.75 and fires[8:].float().mean() <= 0.25, (c.describe(), fires)
        receipt = sas.Receipt(rows=len(prompts))
        with sas.steer(gemma, v, 4.0, condition=c, receipt=receipt):
            sas.generate(gemma, prompts, max_new_tokens=3)
        assert [receipt.row(i)["9"]["positions"] > 0 for i in range(len(prompts))] == fires.tolist()


# ------------------------------------------------------------------------------------- sas serve
def _serve_case(model, folder, vec, cond, prompts, n_tokens):
    """Serve ``model`` with ``vec`` and ``cond`` saved under ``folder``; one completions request per prompt, all
    concurrent (one batch), steered under the condition. Returns each choice (text, receipt)."""
    from concurrent.futures import ThreadPoolExecutor

    openai = pytest.importorskip("openai")
    from sas.serve import Limits, make_app
    from sas.serve.local import serve_in_thread

    vec.save(folder / "negative")
    cond.save(folder / "cooking")
    app = make_app(model, vectors_dir=folder, limits=Limits(max_tokens=32, max_batch=8, window_ms=300))
    steer = [{"vector": "negative", "strength": 1.0, "condition": "cooking"}]
    with serve_in_thread(app) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)
        with ThreadPoolExecutor(len(prompts)) as pool:
            out = list(pool.map(lambda p: client.completions.create(
                model=model.cfg.model_name, prompt=p, max_tokens=n_tokens, temperature=0,
                extra_body={"steer": steer}), prompts))
        bad = httpx_post(base, {"model": model.cfg.model_name, "prompt": "x", "max_tokens": 2,
                                "steer": [{"vector": "cooking", "strength": 1.0}]})
        assert bad.status_code == 400 and "is a condition, not a vector" in bad.json()["error"]["message"]
        bad = httpx_post(base, {"model": model.cfg.model_name, "prompt": "x", "max_tokens": 2,
                                "steer": [{"vector": "negative", "strength": 1.0, "condition": "negative"}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "steer.0.condition"
    return [(r.choices[0].text, r.choices[0].model_extra["receipt"]) for r in out]


def httpx_post(base, body):
    import httpx

    return httpx.post(base + "/v1/completions", json=body, timeout=60)


def test_a_served_request_names_a_condition_and_it_applies_per_row(tiny, tmp_path):
    """A real local server on the tiny model: concurrent requests batched together, each steered under a saved
    condition file; the rows where it does not hold are unsteered (same text as sas.generate, zero edits in their
    receipt), the others are steered as sas.steer steers them alone."""
    prompts = COOKING[:3] + OTHER[:3]
    cond = _between(tiny, {"name": "cooking"}, prompts)
    fires = cond.fires(tiny, prompts).tolist()
    torch.manual_seed(0)
    vec = sas.SteeringVector({2: torch.randn(32) * 8}, "tiny", "caa")
    got = _serve_case(tiny, tmp_path, vec, cond, prompts, 5)
    for p, on, (text, receipt) in zip(prompts, fires, got):
        with sas.steer(tiny, vec, 1.0, condition=cond):
            alone = sas.generate(tiny, [p], 5)[0]
        assert text == alone
        assert (receipt["2"]["positions"] > 0) == on
        if not on:
            assert text == sas.generate(tiny, [p], 5)[0]


@pytest.mark.slow
def test_gemma_served_with_a_feature_condition_steers_only_the_cooking_rows(gemma, tmp_path):
    """The real case through `sas serve` and the openai client: a features condition in gemma-3-270m-L9-16k built
    on cooking texts; of 4 concurrent requests, the 2 about cooking are edited and the 2 others are not."""
    from sas.concepts.schema import get_concept
    from sas.load.saes import load_sae

    cooking = get_concept("cooking")
    pos, neg = cooking.positive_texts(), cooking.negative_texts()
    cond = condition_from_texts(gemma, pos[:48], neg[:48], 9, sae=load_sae("gemma-3-270m-L9-16k", gemma),
                                name="cooking", n_features=4)
    vec = sas.contrastive_vector(gemma, ["I feel bad", "This is sad"], ["I feel good", "This is happy"], [9])
    prompts = [pos[60], neg[61], pos[75], neg[90]]
    fires = cond.fires(gemma, prompts).tolist()
    assert fires == [True, False, True, False], (cond.describe(), fires)
    got = _serve_case(gemma, tmp_path, vec, cond, prompts, 6)
    assert [r["9"]["positions"] > 0 for _, r in got] == fires
    plain = sas.generate(gemma, prompts, 6)
    assert [t == u for (t, _), u in zip(got, plain)] == [False, True, False, True]
