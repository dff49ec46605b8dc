"""Integration tests on the real gemma-3-270m: CAA from real pairs, the A/B scorer against a plain forward,
sentiment steering in both directions, generation under steering, a CLI sweep. Marked slow; CI runs them."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import hooks_left

import sas.cli
from sas.methods.caa import caa_vector
from sas.load.data import load_behavior
from sas.evaluation.ab import ABScorer
from sas.forward.generate import generate
from sas.load.prompts import BASE_SUFFIX
from sas.steering import steer
from sas.evaluation.concept import run_task

from sas.runs.vectors import task_vector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def syco_vector(gemma):
    """A CAA sycophancy vector at layers 4 and 8 from 40 real generate-split pairs (letter-balanced)."""
    return caa_vector(gemma, load_behavior("sycophancy")[:40], [4, 8], "sycophancy", progress=False)


def test_caa_vector_from_real_pairs(gemma, syco_vector):
    v = syco_vector
    assert v.model == "gemma-3-270m" and v.layers == [4, 8] and v.d_model == 640
    assert v.settings["n_pairs"] >= 30 and v.settings["n_matching_A"] * 2 == v.settings["n_pairs"]
    norms = v.norms()
    for layer, d in v.directions.items():
        assert d.shape == (640,) and torch.isfinite(d).all()
        assert norms[layer] > 1.0  # residual norms here are in the thousands: zero would mean no contrast
    cos = torch.cosine_similarity(v.directions[4], v.directions[8], dim=0)
    assert cos < 0.99  # two layers, two different directions
    assert hooks_left(gemma) == {}


def _plain_ab(model, pairs, vec=None, mult=0.0, layer=None):
    """P(letter) from a plain full forward with the model's own unembedding, one unpadded question at a time."""
    tok = model.tokenizer
    ids = {x: tok(x, add_special_tokens=False).input_ids[0] for x in "AB"}
    rows = []
    for p in pairs:
        prefix = [tok.bos_token_id] + tok(p.question, add_special_tokens=False).input_ids
        tokens = torch.tensor([prefix + tok(BASE_SUFFIX, add_special_tokens=False).input_ids])
        hooks = []
        if vec is not None:
            def add(x, hook, start=len(prefix)):
                x = x.clone()
                x[:, start:] += mult * vec.directions[layer]
                return x

            hooks = [(f"blocks.{layer}.hook_resid_post", add)]
        with torch.inference_mode():
            probs = torch.softmax(model.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1].float(), -1)
        rows.append({x: probs[i].item() for x, i in ids.items()} | {"match": p.matching, "other": p.not_matching})
    return rows


def test_ab_scorer_reads_the_letter_tokens(gemma, syco_vector):
    pairs = load_behavior("corrigible-neutral-HHH", "test")[:4]  # short questions, both letters matching
    assert {p.matching for p in pairs} == {"A", "B"}
    scorer = ABScorer(gemma, pairs, batch_size=3)
    tok = gemma.tokenizer
    assert {x: tok.decode([i]) for x, i in scorer.t.letters.items()} == {"A": "A", "B": "B"}
    for vec, mult in ((None, 0.0), (syco_vector, 4.0)):
        rows = _plain_ab(gemma, pairs, vec, mult, 8)
        # the scaffold "...\n\nAnswer: (" makes the letters likely: the scorer reads real answer tokens
        assert sum(r["A"] + r["B"] for r in rows) / len(rows) > 0.3
        want_match = sum(r[r["match"]] / (r["A"] + r["B"]) for r in rows) / len(rows)
        want_raw = sum(r[r["match"]] for r in rows) / len(rows)
        want_a = sum(r["A"] / (r["A"] + r["B"]) for r in rows) / len(rows)
        got = scorer.score(vec, mult, [8]) if vec is not None else scorer.score()
        assert got["n"] == 4
        assert got["p_match"] == pytest.approx(want_match, abs=2e-4)
        assert got["p_match_raw"] == pytest.approx(want_raw, abs=2e-4)
        assert got["p_a"] == pytest.approx(want_a, abs=2e-4)
    assert hooks_left(gemma) == {}


# ActAdd "Love" - "Hate" at layer 8, x+10 / 0 / x-10, 32 neutral prompts x 20 sampled tokens (VADER compound mean),
# measured here with the concept evaluation (prompt i samples with seed + i at every multiplier): seed 0 +0.14 /
# +0.21 / -0.22, seed 1 +0.26 / +0.07 / -0.32; with the contrast words masked, seed 0 +0.03 / +0.21 / -0.14, seed 1
# +0.11 / +0.07 / -0.27. At 32 prompts the plus side's interval overlaps the unsteered one (seed 0: [0.01, 0.26]
# against [0.08, 0.34]; sas 0.1's sampling gave +0.30 / +0.10 there), so the test checks that the two directions
# separate and that minus falls below the unsteered model.
SENTIMENT = dict(n_prompts=32, max_new_tokens=20, seed=0)


def test_sentiment_steering_moves_vader_both_ways(gemma):
    v = task_vector(gemma, "sentiment", "actadd", [8])
    res = {m: run_task(gemma, "sentiment", v, m, [8], **SENTIMENT) for m in (10.0, 0.0, -10.0)}
    plus, zero, minus = (res[m]["score"] for m in (10.0, 0.0, -10.0))
    assert zero > minus, (plus, zero, minus)
    assert plus - minus > 0.3, (plus, minus)
    # not only ActAdd's own words: with "love"/"hate" masked out, the two directions still separate
    assert res[10.0]["score_masked"] - res[-10.0]["score_masked"] > 0.15
    assert res[10.0]["texts"] != res[0.0]["texts"] and all(r["n"] == 32 for r in res.values())
    assert hooks_left(gemma) == {}


def test_greedy_generation_changes_under_steering(gemma):
    prompts = ["I think that", "The weather today is"]
    v = task_vector(gemma, "sentiment", "actadd", [6])
    plain = generate(gemma, prompts, max_new_tokens=8)
    with steer(gemma, v, 10.0):
        assert hooks_left(gemma) == {"blocks.6.hook_resid_post": 1}
        steered = generate(gemma, prompts, max_new_tokens=8)
    assert all(len(t.strip()) > 0 for t in plain + steered)
    assert steered[0] != plain[0] and steered[1] != plain[1]
    assert hooks_left(gemma) == {}
    assert generate(gemma, prompts, max_new_tokens=8) == plain


def test_hooks_removed_after_an_error_on_the_real_model(gemma, syco_vector):
    with pytest.raises(KeyboardInterrupt):
        with steer(gemma, syco_vector, 2.0):
            assert set(hooks_left(gemma)) == {"blocks.4.hook_resid_post", "blocks.8.hook_resid_post"}
            raise KeyboardInterrupt
    assert hooks_left(gemma) == {}


def test_cli_sweep_smoke(gemma, tmp_path, monkeypatch, capsys):
    """`sas sweep` on 1 behaviour, 1 layer, 2 multipliers (the model is the session's, to load it once)."""
    def model(args):
        assert args.model == "gemma-3-270m"
        return gemma

    monkeypatch.setattr(sas.cli, "_model", model)
    out = tmp_path / "sweep.jsonl"
    argv = ["sweep", "--behavior", "corrigible-neutral-HHH", "--layers", "3", "--multipliers", "-1,1",
            "--n-test", "4", "--out", str(out)]
    sas.cli.main(argv)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    keys = {"model", "method", "behavior", "layer", "multiplier", "p_match", "p_match_raw", "n", "seconds"}
    assert len(rows) == 2 and all(keys <= set(r) for r in rows)
    assert {(r["model"], r["method"], r["behavior"], r["layer"], r["n"]) for r in rows} == {
        ("gemma-3-270m", "caa", "corrigible-neutral-HHH", 3, 4)}
    assert sorted(r["multiplier"] for r in rows) == [-1.0, 1.0]
    assert all(0 < r["p_match"] < 1 and 0 < r["p_match_raw"] < 1 and r["seconds"] > 0 for r in rows)
    assert rows[0]["p_match"] != rows[1]["p_match"]
    text = capsys.readouterr().out
    assert "p_match" in text and "corrigible-neutral-HHH" in text
    assert out.with_suffix(".vectors").is_dir() and out.with_suffix(".png").exists()
    sas.cli.main(argv)  # a rerun resumes: nothing to add
    assert len(out.read_text().splitlines()) == 2
    assert hooks_left(gemma) == {}
