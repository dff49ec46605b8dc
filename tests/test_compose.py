"""sas compose: the overlap of two vectors (dense, sparse, mixed; layers that do not overlap), composed generation
equal to steering with both vectors, bad input (fast, tiny model); a small composition run on the real
gemma-3-270m with a shipped SAE, resumed (slow)."""

import json

import pytest
import torch

from sas.runs.compose import Setup, composition_table, compose, overlap, parse_pair, retained, sparse_vs_dense
from sas.steering.sparse import SparseVector
from sas.steering.vector import SteeringVector
from test_reliability import random_sae


def _code(entries: dict) -> torch.Tensor:
    c = torch.zeros(64)
    for f, v in entries.items():
        c[f] = v
    return c


def test_overlap_of_dense_sparse_and_mixed_vectors_and_of_layers_that_do_not_overlap():
    sae1, sae2 = random_sae(layer=1), random_sae(layer=2, seed=1)
    d1 = SteeringVector({1: torch.tensor([1.0, 0.0] + [0.0] * 30)}, "tiny", "caa", "a")
    d2 = SteeringVector({1: torch.tensor([1.0, 1.0] + [0.0] * 30), 2: torch.randn(32)}, "tiny", "caa", "b")
    o = overlap(d1, 1, d2, 1)
    assert o["layers"] == "same" and o["cosine"] == pytest.approx(2 ** -0.5, abs=1e-6) and o["features"] is None

    a = SparseVector({1: _code({3: 1.0, 7: -2.0, 20: 0.5})}, {1: sae1}, "tiny", sae_names={1: "s1"})
    b = SparseVector({1: _code({7: -1.0, 20: -4.0, 40: 1.0})}, {1: sae1}, "tiny", sae_names={1: "s1"})
    o = overlap(a, 1, b, 1)
    assert o["n_shared"] == 2 and o["n_a"] == 3 and o["n_b"] == 3 and o["same_sign"] == 1
    assert o["shared_features"] == [7, 20]  # by the smaller |weight|: 7 (min 1.0) before 20 (min 0.5)
    assert o["shared_weight_a"] == pytest.approx(2.5 / 3.5) and o["shared_weight_b"] == pytest.approx(5.0 / 6.0)
    dense_a, dense_b = a.to_dense().tensor(1), b.to_dense().tensor(1)
    assert o["cosine"] == pytest.approx(torch.nn.functional.cosine_similarity(dense_a, dense_b, dim=0).item(), abs=1e-5)

    c = SparseVector({2: _code({7: 1.0})}, {2: sae2}, "tiny", sae_names={2: "s2"})
    o = overlap(a, 1, c, 2)  # feature 7 of another SAE is another feature
    assert o["layers"] == "different" and "n_shared" not in o and "no feature can be shared" in o["features"]
    o = overlap(d2, 2, a, 1)
    assert o["layers"] == "different" and o["features"] == "one vector is dense: no features to share"
    assert o["cosine"] == pytest.approx(torch.nn.functional.cosine_similarity(d2.tensor(2), dense_a, dim=0).item(),
                                        abs=1e-5)


def test_composed_generation_is_steering_with_both_vectors(tiny):
    from sas.concepts import get_concept
    from sas.evaluation.concept import evaluate_concept
    from sas.forward.generate import generate
    from sas.steering import steer

    torch.manual_seed(0)
    sae = random_sae(layer=2)
    dense = SteeringVector({1: torch.randn(32) * 4}, "tiny", "caa", "a")
    sparse = SparseVector({2: _code({3: 6.0, 7: 4.0})}, {2: sae}, "tiny", sae_names={2: "s"})
    prompts = ["The cat sat on", "My friend went to"]
    rows = evaluate_concept(tiny, get_concept("weddings"), prompts, [dense, sparse], [1, 2],
                            [(1.5, 0.0), (0.0, 2.0), (1.5, 2.0)], max_new_tokens=5, seed=3)
    with steer(tiny, [dense, sparse], [1.5, 2.0]):
        both = generate(tiny, prompts, max_new_tokens=5, do_sample=True, top_k=50, seed=[3, 4])
    with steer(tiny, dense, 1.5):
        alone = generate(tiny, prompts, max_new_tokens=5, do_sample=True, top_k=50, seed=[3, 4])
    assert rows[2][1] == both and rows[0][1] == alone and rows[2][1] != rows[0][1]
    with pytest.raises(ValueError, match="2 vectors need as many layers"):
        evaluate_concept(tiny, get_concept("weddings"), prompts, [dense, sparse], [1], [(1.0, 1.0)])


@pytest.mark.slow  # tiny model, but minutes of CPU under load: out of the fast lane
def test_compose_on_the_tiny_model_tunes_steers_pairs_reports_overlap_and_resumes(tiny, tmp_path):
    from sas.reports.compose import write_report

    saes = {1: random_sae(layer=1), 2: random_sae(layer=2, seed=1)}
    out = tmp_path / "c.jsonl"
    kw = dict(pairs=["sentiment-positive+weddings", "weddings+cooking"],
              setups=["caa@1+caa@1", "sas@1+sas@1", "caa@1+sas@1", "sas@1+sas@2"], budget=1e6, n_tune=3, n_test=3,
              max_new_tokens=3, strengths=(0.05, 0.2), extend=0, out=out, progress=False, batch_size=64)
    r = compose(tiny, saes, **kw)
    terms = [tuple((t["concept"], t["method"], t["layer"]) for t in row["terms"]) for row in r.rows]
    assert terms[0] == () and len(terms) == len(set(terms))  # the unsteered model and each vector alone once
    assert (("weddings", "sas", 1),) in terms and (("weddings", "sas", 1), ("cooking", "sas", 2)) in terms
    assert all(set(row["scores"]) == {"sentiment-positive", "weddings", "cooking"} for row in r.rows)
    recs = {(rec["pair"], rec["setup"]): rec for rec in composition_table(r)}
    assert len(recs) == 8 and not [rec["why"] for rec in recs.values() if "why" in rec]
    split = recs[("weddings+cooking", "sas@1+sas@2")]
    assert split["kind"] == "sparse" and split["layers"] == "different"
    assert "no feature can be shared" in split["overlap"]["features"]
    same = recs[("weddings+cooking", "sas@1+sas@1")]
    assert same["layers"] == "same" and same["overlap"]["n_a"] > 0 and "n_shared" in same["overlap"]
    assert recs[("weddings+cooking", "caa@1+sas@1")]["kind"] == "mixed"
    for rec in recs.values():
        assert rec["a_diff_lo"] <= rec["a_diff"] <= rec["a_diff_hi"]
        assert rec["b_diff"] == pytest.approx(rec["b_together"] - rec["b_alone"])
    assert [c["sparse"] for c in sparse_vs_dense(r)] == ["sas@1+sas@1"]
    n = len(out.read_text().splitlines())
    again = compose(tiny, saes, **kw)  # resumed: nothing is generated again
    assert len(out.read_text().splitlines()) == n and [x["key"] for x in again.rows] == [x["key"] for x in r.rows]
    assert (tmp_path / "c.tuning.jsonl").exists()
    text = write_report(r, tmp_path / "c.md").read_text()
    assert "| weddings+cooking | sas@1+sas@2 | sparse |" in text and "layers do not overlap" in text


def test_compose_refuses_bad_pairs_setups_and_a_sparse_layer_without_an_sae():
    assert parse_pair("sentiment-positive+weddings") == ("sentiment-positive", "weddings")
    with pytest.raises(ValueError, match="two different concepts"):
        parse_pair("weddings+weddings")
    with pytest.raises(ValueError, match="a pair is two concepts"):
        parse_pair("weddings")
    with pytest.raises(ValueError, match="METHOD@LAYER"):
        Setup.parse("caa5+sas@9")
    with pytest.raises(ValueError, match="no SAE is given there"):
        compose(None, {5: "gemma-3-270m-L5-4k"}, ["sentiment-positive+weddings"], ["sas@5+sas@9"])
    with pytest.raises(ValueError, match="cannot be composed"):
        compose(None, {}, ["sentiment-positive+weddings"], ["prompt@5+caa@5"])


@pytest.mark.slow
def test_compose_on_gemma_with_a_shipped_sae_reports_and_resumes(gemma_fast, tmp_path):
    from sas.load.saes import load_sae
    from sas.reports.compose import write_report

    saes = {5: load_sae("gemma-3-270m-L5-4k", gemma_fast)}
    out = tmp_path / "c.jsonl"
    kw = dict(pairs=["sentiment-positive+weddings"], setups=["caa@5+caa@5", "sas@5+sas@5", "caa@5+sas@5"],
              budget=3.0, n_tune=4, n_test=6, max_new_tokens=6, strengths=(0.01, 0.02), extend=0, out=out,
              progress=False)
    r = compose(gemma_fast, saes, **kw)
    terms = [tuple(t["method"] for t in row["terms"]) for row in r.rows]
    assert terms[0] == () and ("caa", "sas") in terms and ("sas", "sas") in terms, \
        [rec.get("why") for rec in composition_table(r)]
    assert all(len(row["scores"]["weddings"]) == 6 and len(row["nll"]) == 6 for row in r.rows)
    recs = {rec["setup"]: rec for rec in composition_table(r)}
    assert set(recs) == {"caa@5+caa@5", "sas@5+sas@5", "caa@5+sas@5"}
    for rec in recs.values():
        if "why" in rec:
            continue
        assert rec["a_diff_lo"] <= rec["a_diff"] <= rec["a_diff_hi"] and rec["ppl_together"] > 0
        assert rec["a_diff"] == pytest.approx(rec["a_together"] - rec["a_alone"])
    sparse = recs["sas@5+sas@5"]
    assert "why" not in sparse, sparse.get("why")
    assert sparse["kind"] == "sparse" and sparse["overlap"]["n_a"] > 0 and "n_shared" in sparse["overlap"]
    assert recs["caa@5+sas@5"]["kind"] == "mixed" and recs["caa@5+caa@5"]["kind"] == "dense"
    together = next(row for row in r.rows if row["setup"] == "sas@5+sas@5")
    assert together["receipt"]["5"]["positions"] > 0
    assert 0 < len(sparse_vs_dense(r))  # a setup parsed from its name reads the same rows (NaN: nothing to retain)
    assert retained(r, Setup.parse("sas@5+sas@5"))[0] == pytest.approx(retained(r, r.setups[1])[0], nan_ok=True)
    n = len(out.read_text().splitlines())
    again = compose(gemma_fast, saes, **kw)  # resumed: nothing is generated again
    assert len(out.read_text().splitlines()) == n and [x["key"] for x in again.rows] == [x["key"] for x in r.rows]
    text = write_report(r, tmp_path / "c.md").read_text()
    assert "| sentiment-positive+weddings | sas@5+sas@5 | sparse |" in text and "gemma-3-270m-L5-4k" in text
    assert json.loads(out.read_text().splitlines()[0])["key"]["kind"] == "compose"
