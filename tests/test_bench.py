"""sas bench: intervals, the budget choice, strength calibration, paired sampling, the two-split protocol on the
tiny model (fast), and `sas bench --quick` on the real gemma-3-270m with a shipped SAE (slow)."""

import json
import re

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
    assert not got["sas", 2.0].reached and "exceeds the budget" in got["sas", 2.0].why and "4.00" in got["sas", 2.0].why


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
              n_test=6, max_new_tokens=4, out=out, progress=False, budgets=(1.5, 3.0))
    r = bench(tiny, {1: random_sae(layer=1)}, **kw)
    assert {row["split"] for row in r.tuning} == {"tuning"} and {row["split"] for row in r.test} == {"test"}
    assert all(row["n"] == 6 and len(row["scores"]) == 6 for row in r.test)
    assert len(r.choices) == 4 * 2 and all(isinstance(c, Choice) for c in r.choices)
    chosen = {(c.method, c.layer, c.strength) for c in r.choices if c.reached}
    assert chosen <= {(row["method"], row["layer"], row["multiplier"]) for row in r.test}
    n = len(out.read_text().splitlines())
    again = bench(tiny, {1: random_sae(layer=1)}, **kw)
    assert len(out.read_text().splitlines()) == n and again.test == r.test  # resumed: nothing redone
    steered = [row for row in r.tuning if row["method"] == "caa" and row["multiplier"] > 0]
    assert [round(row["raw_multiplier"] / steered[0]["raw_multiplier"], 3) for row in steered] == [1.0, 4.0]
    report = write_report(r, tmp_path / "report")
    text = report.read_text()
    assert "## Perplexity budget 1.5x unsteered" in text and "| weddings |" in text
    best = best_sparse(r, table(r))  # the best sparse method is picked on tuning scores, never on test ones
    for rec in best:
        tuned = [c for c in r.choices if c.budget == rec["budget"] and c.method in ("sas", "sas_diff") and c.reached]
        if rec["method"] is None:
            assert not tuned
            continue
        picked = next(c for c in tuned if c.method == rec["method"])
        assert picked.tuning_score == max(c.tuning_score for c in tuned) and "vs_unsteered" in rec
        assert f"| {rec['budget']:g}x | weddings | {rec['method']} (L1," in text
    assert "## The best sparse method" in text and "concepts, better than the paper's SAS" in text
    assert "without the paper's SAS in the pool (sas_diff): at least as good as CAA" in text
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

    with pytest.raises(ValueError, match="budget is a perplexity ratio above 1"):
        bench(None, {5: "gemma-3-270m-L5-4k"}, ["weddings"], budgets=(0.9,))
    with pytest.raises(ValueError, match="strengths are relative edit sizes"):
        bench(None, {5: "gemma-3-270m-L5-4k"}, ["weddings"], strengths=(0.0, 0.1))
    bad = tmp_path / "few.yaml"
    bad.write_text(json.dumps({"name": "few", "scorer": "vader", "prefix": "Be happy. ",
                               "pairs": [["good day", "bad day"]] * 3}))
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
