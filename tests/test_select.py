"""Issue 11: selection rules (shared features, output scores, top-k), clamping, SAE-TS's effect map and solve.
Fast tests on the tiny model with random SAEs for the mechanics; slow ones on gemma-3-270m with the shipped SAEs."""

import math

import pytest
import torch
from test_sparse import LAYER, TOKENS, random_sae

from sas.activations.contrast import Contrast
from sas.methods.select import NoFeatures, select_features
from sas.steering.sparse import SparseVector


# --------------------------------------------------------------------------- selection rules
def _codes():
    # feature 0: positive only; 1: negative only; 2: both sides, larger on the positive; 3: both, equal; 4: rare
    pos = torch.tensor([[2.0, 0, 3.0, 1.0, 0], [2.0, 0, 3.0, 1.0, 0], [2.0, 0, 3.0, 1.0, 5.0], [2.0, 0, 3.0, 1.0, 0]])
    neg = torch.tensor([[0, 1.0, 1.0, 1.0, 0], [0, 1.0, 1.0, 1.0, 0], [0, 1.0, 1.0, 1.0, 0], [0, 1.0, 1.0, 1.0, 0]])
    return pos, neg


def test_shared_drop_is_the_paper_rule_and_diff_keeps_the_mean_difference():
    pos, neg = _codes()
    v, info = select_features(pos, neg, tau=0.5)
    assert v.tolist() == [2.0, -1.0, 0, 0, 0] and info["n_both"] == 2 and info["n_features"] == 2
    v, info = select_features(pos, neg, tau=0.5, shared="diff")
    assert v.tolist() == [2.0, -1.0, 2.0, 0, 0]  # 3 - 1 on feature 2; feature 3 has no difference
    assert info["n_shared_kept"] == 1 and info["n_candidates"] == 3


def test_output_score_filter_and_top_k_by_each_score():
    pos, neg = _codes()
    scores = torch.tensor([0.5, 0.001, 0.2, 0.9, 0.0])
    v, info = select_features(pos, neg, tau=0.5, shared="diff", output_scores=scores, min_output_score=0.01)
    assert v.nonzero()[:, 0].tolist() == [0, 2] and info["n_removed_output_score"] == 1
    by = {r: select_features(pos, neg, tau=0.5, shared="diff", output_scores=scores, top_k=1, rank_by=r)[0]
          for r in ("diff", "output_score", "diff_x_output")}
    assert by["diff"].nonzero()[:, 0].tolist() in ([0], [2])  # |2| ties
    assert by["output_score"].nonzero()[:, 0].tolist() == [0]  # 0.5 > 0.2 > 0.001
    assert by["diff_x_output"].nonzero()[:, 0].tolist() == [0]  # 1.0 > 0.4 > 0.001


def test_a_selection_that_leaves_nothing_says_which_rule_removed_what():
    pos, neg = _codes()
    with pytest.raises(NoFeatures, match=r"shared='drop' removed the 2 kept on both sides"):
        select_features(pos[:, 2:4], neg[:, 2:4], tau=0.5)
    scores = torch.tensor([0.001, 0.001, 0.001, 0.9, 0.0])
    with pytest.raises(NoFeatures, match=r"min_output_score=0.01 removed 3 of the 3 candidates"):
        select_features(pos, neg, tau=0.5, shared="diff", output_scores=scores, min_output_score=0.01)
    with pytest.raises(ValueError, match="uses output scores"):
        select_features(pos, neg, min_output_score=0.01)
    with pytest.raises(ValueError, match="shared must be one of"):
        select_features(pos, neg, shared="keep")


# --------------------------------------------------------------------------- clamping
def _clamp_vector(sae, fast=True):
    code = torch.zeros(sae.cfg.d_sae)
    code[[3, 7, 50]] = torch.tensor([1.0, -2.0, 0.5])
    typical = torch.zeros(sae.cfg.d_sae)
    typical[[3, 7, 50]] = torch.tensor([0.8, 1.5, 2.0])
    return SparseVector({LAYER: code}, {LAYER: sae}, "tiny", sae_names={LAYER: "random"}, edit="clamp",
                        typical={LAYER: typical}, fast=fast)


def test_clamp_sets_the_chosen_features_and_keeps_the_error(tiny):
    sae = random_sae(b_dec_in=False)
    vec = _clamp_vector(sae)
    _, cache = tiny.run_with_cache(TOKENS, names_filter=f"blocks.{LAYER}.hook_resid_post")
    x = cache[f"blocks.{LAYER}.hook_resid_post"]
    for s in (2.0, -3.0):
        out = vec.hook(LAYER, s, "all")(x.clone())
        z = sae.encode(x[0])
        z2 = z.clone()
        on = [3, 50] if s > 0 else [7]
        off = [7] if s > 0 else [3, 50]
        z2[:, on] = abs(s) * torch.tensor([0.8, 1.5, 2.0])[[{3: 0, 7: 1, 50: 2}[f] for f in on]]
        z2[:, off] = 0
        want = sae.decode(z2) + (x[0] - sae.decode(z))  # clamped code decoded, reconstruction error kept
        torch.testing.assert_close(out[0], want, atol=1e-4, rtol=1e-4)
        full = _clamp_vector(sae, fast=False).hook(LAYER, s, "all")(x.clone())
        torch.testing.assert_close(out, full, atol=1e-4, rtol=1e-4)
    assert torch.equal(vec.hook(LAYER, 0.0, "all")(x.clone()), x)  # strength 0: no edit
    rows = vec.hook(LAYER, torch.tensor([0.0, 2.0]), "all")(torch.cat([x, x]))
    torch.testing.assert_close(rows[1], vec.hook(LAYER, 2.0, "all")(x.clone())[0])
    assert torch.equal(rows[0], x[0])



def test_a_strength_below_the_clamps_smallest_edit_is_unreachable_not_a_vanishing_multiplier(tiny):
    """Clamping at any strength > 0 first removes the chosen features' activations, so the edit jumps from 0 to a
    floor: a relative strength below it is refused (the bench records a skipped row), not calibrated to a
    multiplier that underflows to 0 and edits nothing."""
    from sas.steering.strength import Unreachable, edit_size, raw_multiplier

    sae = random_sae(b_dec_in=False)
    vec = _clamp_vector(sae)
    _, cache = tiny.run_with_cache(TOKENS, names_filter=f"blocks.{LAYER}.hook_resid_post")
    acts = cache[f"blocks.{LAYER}.hook_resid_post"][0]
    floor = edit_size(vec, LAYER, 1e-6, acts)
    assert floor > 0 and edit_size(vec, LAYER, 0.0, acts) == 0
    with pytest.raises(Unreachable, match="its edit jumps from 0 "):
        raw_multiplier(vec, LAYER, acts, floor / 2)
    m = raw_multiplier(vec, LAYER, acts, 3 * floor)  # above the floor the edit grows with the strength
    assert m > 1e-3 and edit_size(vec, LAYER, m, acts) == pytest.approx(3 * floor, rel=1e-2)

def test_clamp_refuses_non_finite_targets_and_round_trips(tmp_path):
    sae = random_sae(b_dec_in=False)
    vec = _clamp_vector(sae)
    for bad in (math.inf, math.nan, torch.tensor([1.0, math.inf])):
        with pytest.raises(ValueError, match="must be finite"):
            vec.hook(LAYER, bad, "all")
    typical = vec.typical[LAYER].clone()
    typical[7] = math.nan
    with pytest.raises(ValueError, match=r"feature\(s\) \[7\].*not a finite positive value"):
        SparseVector(vec.codes, vec.saes, "tiny", edit="clamp", typical={LAYER: typical})
    with pytest.raises(ValueError, match="needs the typical active value"):
        SparseVector(vec.codes, vec.saes, "tiny", edit="clamp")
    from sas.export.gguf import control_vector

    with pytest.raises(ValueError, match="not a constant residual vector"):
        control_vector(vec)  # llama.cpp can only add
    back = SparseVector.load(vec.save(tmp_path / "c"), saes={LAYER: sae})
    assert back.edit == "clamp" and torch.equal(back.typical[LAYER], vec.typical[LAYER])
    x = torch.randn(1, 4, 32)
    assert torch.equal(back.hook(LAYER, 2.0, "all")(x.clone()), vec.hook(LAYER, 2.0, "all")(x.clone()))


def _amplified_logits(model, sae, toks, f):
    """Last-position logits with feature ``f`` amplified at the last position (Arad et al.'s amplification),
    one feature at a time through a hook: the reference the batched scores are checked against."""
    def amplify(x, hook):
        z = sae.encode(x)
        err = x - sae.decode(z)
        z = z.clone()
        z[:, -1, f] += z[:, -1].max().item() * 10
        return sae.decode(z) + err

    return model.run_with_hooks(toks, fwd_hooks=[(f"blocks.{LAYER}.hook_resid_post", amplify)])[0, -1]


# --------------------------------------------------------------------------- output scores, statistics, cache
def test_output_scores_match_the_papers_per_feature_hook(tiny):
    """The batched computation equals their AmlifySAEHook + get_output_score run feature by feature."""
    from sas.steering.output_scores import NEUTRAL_PROMPT, compute_output_scores, logit_lens_tokens
    from sas.forward.run import encode

    sae = random_sae(b_dec_in=False)
    feats = [0, 3, 7, 50, 127]
    got = compute_output_scores(tiny, sae, features=feats, batch_size=2)
    toks = torch.tensor(encode(tiny, [NEUTRAL_PROMPT]))
    lens = logit_lens_tokens(tiny, sae, 20, feats)
    for j, f in enumerate(feats):
        logits = _amplified_logits(tiny, sae, toks, f)
        p = torch.softmax(logits.float(), -1)
        order = torch.argsort(p, descending=True)
        rank = min((order == t).nonzero()[0].item() for t in lens[j].tolist())
        want = p[lens[j]].max().item() * (1 - rank / p.shape[0])
        assert got[j].item() == pytest.approx(want, rel=1e-4, abs=1e-9)


def test_delta_token_confidence_matches_a_per_feature_hook(tiny):
    """ΔToken Confidence (Wang et al. 2026), batched, equals the amplification of the output score run feature by
    feature with a hook: the top token's probability amplified minus unamplified."""
    from sas.steering.output_scores import NEUTRAL_PROMPT, compute_delta_token_confidence
    from sas.forward.run import encode

    sae = random_sae(b_dec_in=False)
    feats = [0, 3, 7, 50, 127]
    got = compute_delta_token_confidence(tiny, sae, features=feats, batch_size=2)
    toks = torch.tensor(encode(tiny, [NEUTRAL_PROMPT]))
    p0 = torch.softmax(tiny(toks)[0, -1].float(), -1).max().item()
    for j, f in enumerate(feats):
        logits = _amplified_logits(tiny, sae, toks, f)
        want = torch.softmax(logits.float(), -1).max().item() - p0
        assert got[j].item() == pytest.approx(want, rel=1e-4, abs=1e-7)


def test_statistics_are_cached_by_sae_weights(tiny, tmp_path, monkeypatch):
    from sas.activations.feature_stats import feature_stats
    from sas.steering.output_scores import output_scores

    monkeypatch.setenv("SAS_CACHE", str(tmp_path))
    sae = random_sae(d_sae=32, b_dec_in=False)
    sae.sas_name = "random-test-sae"
    texts = ["The cat sat on the mat and looked at the birds outside. " * 20] * 3
    with pytest.warns(UserWarning, match="computing output scores"):
        s1 = output_scores(tiny, sae)
    assert len(list(tmp_path.rglob("output_scores-*.safetensors"))) == 1
    assert torch.equal(output_scores(tiny, sae), s1)  # read back, no warning needed
    with pytest.warns(UserWarning, match="computing activation statistics"):
        st = feature_stats(tiny, sae, texts, max_tokens=500)
    assert st.n_positions > 0 and (st.frequency <= 1).all() and (st.mean_active[st.frequency > 0] > 0).all()
    with torch.no_grad():
        sae.W_dec.mul_(2.0)  # other weights: the cache is not used
    with pytest.warns(UserWarning, match="other SAE weights"):
        s2 = output_scores(tiny, sae)
    assert s2.shape == s1.shape


def test_a_stale_copy_is_passed_over_silently_when_a_later_place_has_a_valid_one(tmp_path, monkeypatch):
    """A shipped float32 file read by the same SAE in bfloat16 (other weights' sha256) must not claim a recompute
    when the user's cache has a valid copy; with no valid copy anywhere, it says so."""
    import warnings

    from sas.activations import sae_cache

    monkeypatch.setenv("SAS_CACHE", str(tmp_path))
    sae = random_sae(d_sae=8, b_dec_in=False)
    sae.sas_name = "random-test-sae"
    settings = {"x": 1}
    with torch.no_grad():
        sae.W_dec.mul_(2.0)
    stale, _ = sae_cache.write_cached(sae, "kind", settings, {"v": torch.zeros(3)}, {})
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    stale = stale.rename(shipped / stale.name)
    with torch.no_grad():
        sae.W_dec.div_(2.0)
    sae_cache.write_cached(sae, "kind", settings, {"v": torch.ones(3)}, {})
    monkeypatch.setattr(sae_cache, "_places", lambda s: [shipped, sae_cache.sae_cache_dir(s, sae_cache.SHIPPED)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensors, _ = sae_cache.read_cached(sae, "kind", settings)
    assert torch.equal(tensors["v"], torch.ones(3))
    monkeypatch.setattr(sae_cache, "_places", lambda s: [shipped])
    with pytest.warns(UserWarning, match=f"{stale.name} was computed from other SAE weights"):
        assert sae_cache.read_cached(sae, "kind", settings) is None


# --------------------------------------------------------------------------- SAE-TS
def test_the_effect_map_fit_recovers_a_linear_map_and_solves():
    from sas.steering.effects import EffectMap, fit_effect_map

    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 40, generator=g)
    b = torch.randn(40, generator=g)
    x = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=-1)
    y = x @ w + b + 0.01 * torch.randn(300, 40, generator=g)
    w_fit, b_fit, fit = fit_effect_map(x, y, n_test=30)
    assert fit["explained_variance"] > 0.99 and fit["ev_interval"][0] <= fit["explained_variance"] <= fit["ev_interval"][1]
    shuffled, _, bad = fit_effect_map(x, y[torch.randperm(300, generator=g)], n_test=30)
    assert bad["explained_variance"] < 0.2  # no relation, no fit
    assert torch.allclose(w_fit, w, atol=0.05) and torch.allclose(b_fit, b, atol=0.05)
    # pinv: a target effect the map can make exactly is made by the direction that makes it
    em = EffectMap(w, torch.zeros(40), 1.0, 1.0, (1.0, 1.0))
    d = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    assert torch.nn.functional.cosine_similarity(em.solve(d @ w, "pinv"), d, dim=0) > 0.999
    # SAE-TS's step: no unit direction moves the targeted feature more (for a map without a shared part)
    target = torch.zeros(40)
    target[5] = 1.0
    best = em.predict(em.solve(target, "sae_ts")[None])[0, 5]
    others = em.predict(torch.nn.functional.normalize(torch.randn(200, 16, generator=g), dim=-1))[:, 5]
    assert best >= others.max()
    with pytest.raises(ValueError, match="target effect is zero"):
        em.solve(torch.zeros(40))


def test_measured_effects_of_no_steering_are_zero(tiny):
    from sas.steering.effects import measure_effects

    sae = random_sae(b_dec_in=False)
    prompts = [[2, 651, 5304, 563], [2, 1091, 8088, 651]]
    dirs = torch.zeros(3, 32)
    dirs[1, 0] = 1.0
    eff, base = measure_effects(tiny, sae, dirs, prompts, scale=50.0, n_new=3)
    assert eff.shape == (3, 128) and base.shape == (128,)
    assert torch.equal(eff[0], torch.zeros(128)) and torch.equal(eff[2], torch.zeros(128))
    assert eff[1].abs().sum() > 0  # a large push changes what the model writes


def test_methods_are_registered_and_record_their_rules(tiny, tmp_path, monkeypatch):
    from sas.methods.registry import build_vector, get_method

    monkeypatch.setenv("SAS_CACHE", str(tmp_path))
    for name in ("sas_diff", "sas_os", "sas_clamp", "sae_ts", "sae_ts_pinv"):
        assert get_method(name).needs_sae
    sae = random_sae(b_dec_in=False)
    sae.sas_name = "random-test-sae"
    c = Contrast("toy", positive=["I love this wonderful day", "what a great gift"],
                 negative=["I hate this awful day", "what a terrible gift"])
    v = build_vector(tiny, "sas_diff", c, [LAYER], {LAYER: sae}, tau=0.0)
    assert v.method == "sas_diff" and v.settings["shared"] == "diff" and v.settings["per_layer"][LAYER]["n_features"] > 0
    plain = build_vector(tiny, "sas", c, [LAYER], {LAYER: sae}, tau=0.0)
    assert v.n_features()[LAYER] >= plain.n_features()[LAYER]
    with pytest.raises(NoFeatures, match="min_output_score=2.0 removed"):
        build_vector(tiny, "sas_os", c, [LAYER], {LAYER: sae}, tau=0.0, min_output_score=2.0)


# --------------------------------------------------------------------------- the real model and shipped SAEs
@pytest.fixture(scope="module")
def negative(gemma):
    from sas.concepts import get_concept
    from sas.load.saes import load_sae

    c = get_concept("sentiment-negative")
    return Contrast(c.name, positive=c.positive_texts(), negative=c.negative_texts()), load_sae("gemma-3-270m-L9-4k", gemma)


@pytest.mark.slow
def test_shipped_output_scores_are_the_models(gemma, negative):
    from sas.steering.output_scores import compute_output_scores, output_scores

    _, sae = negative
    shipped = output_scores(gemma, sae)
    feats = [0, 360, 1000, 4095]
    torch.testing.assert_close(compute_output_scores(gemma, sae, features=feats), shipped[feats], rtol=1e-3, atol=1e-7)
    assert 0.02 < (shipped >= 0.01).float().mean() < 0.5  # a minority of features moves the output


@pytest.mark.slow
def test_sas_dtc_keeps_the_candidates_that_most_sharpen_the_output_on_gemma(gemma, negative):
    """sas_dtc on the shipped L9 SAE: sas_diff's candidates, the 16 with the highest ΔToken Confidence (computed
    for all 4,096 features, then read from the cache), each kept at its mean difference."""
    from sas.steering.output_scores import compute_delta_token_confidence, delta_token_confidence
    from sas.methods.registry import build_vector

    contrast, sae = negative
    dtc = delta_token_confidence(gemma, sae)
    feats = [0, 360, 4095]
    torch.testing.assert_close(compute_delta_token_confidence(gemma, sae, features=feats), dtc[feats], rtol=1e-3,
                               atol=1e-6)
    vec = build_vector(gemma, "sas_dtc", contrast, [9], {9: sae})
    diff = build_vector(gemma, "sas_diff", contrast, [9], {9: sae})
    kept, cands = vec.codes[9] != 0, diff.codes[9] != 0
    assert int(kept.sum()) == 16 and bool((cands | ~kept).all())  # a subset of the candidates
    torch.testing.assert_close(vec.codes[9][kept], diff.codes[9][kept])
    assert dtc[kept].min() >= dtc[cands & ~kept].max()  # the top 16 by ΔToken Confidence
    assert vec.settings["feature_score"] == "delta_token_confidence"


@pytest.mark.slow
def test_sentiment_negative_keeping_shared_features_keeps_the_difference(gemma, negative):
    from sas.runs.selection import compare_rules

    contrast, sae = negative
    df = compare_rules(gemma, sae, contrast).set_index("rule")
    paper, diff = df.loc["sas (paper)"], df.loc["sas_diff"]
    assert paper.n_both > 50 and diff.n_shared_kept > 50  # the paper's rule drops them, sas_diff keeps them
    assert diff.share_sq_diff > 0.9 > 0.5 > paper.share_sq_diff
    assert diff.cos_dense > paper.cos_dense
    assert df.loc["sas_os"].n_features < diff.n_features and df.loc["sas_os"].median_output_score >= 0.01


@pytest.mark.slow
def test_clamp_and_sae_ts_on_gemma(gemma, negative, tmp_path, monkeypatch):
    """A clamp vector's edit grows with its strength (what the bench's calibration needs); a small effect map
    measured from the training sample sees decoder rows raise their own features; sae_ts builds from it."""
    import json

    from sas.steering.effects import effect_map
    from sas.methods.registry import build_vector

    contrast, sae = negative
    clamp = build_vector(gemma, "sas_clamp", contrast, [9], {9: sae})
    assert clamp.edit == "clamp" and clamp.n_features()[9] == 16
    pos, neg = contrast.activations(gemma, [9])
    norms = [(clamp.hook(9, s, "all")(pos[9][None]) - pos[9][None]).norm(dim=-1).mean().item() for s in (0.5, 1, 2, 4)]
    assert norms == sorted(norms) and norms[0] > 0
    monkeypatch.setenv("SAS_CACHE", str(tmp_path))  # the effect map below is small: keep it out of the real cache
    texts = [json.loads(line)["text"] for line in open("tests/data/enwiki_train_sample.jsonl", encoding="utf-8")]
    em = effect_map(gemma, sae, texts, n_vectors=24)
    assert math.isfinite(em.explained_variance) and em.meta["n_test"] == 2
    y, feats = read_effects(sae, em)
    own = y[torch.arange(len(feats)), feats]
    assert own.mean() > 0 and own.mean() > y.mean() + 3 * y.std() / math.sqrt(y.shape[1])
    v = build_vector(gemma, "sae_ts", contrast, [9], {9: sae}, effect_vectors=24)
    info = v.settings["per_layer"][9]
    assert v.method == "sae_ts" and info["effect_map_ev"] == em.explained_variance
    assert abs(v.directions[9].norm().item() - em.scale) < 1e-3 * em.scale
    p = build_vector(gemma, "sae_ts_pinv", contrast, [9], {9: sae}, effect_vectors=24)
    assert p.method == "sae_ts_pinv" and p.settings["solve"] == "pinv"
    from sas.activations.codes import encode

    target, _ = select_features(encode(sae, pos[9]), encode(sae, neg[9]), 0.1, "all", "diff")
    d = p.directions[9] / p.directions[9].norm()
    assert torch.allclose(d, em.solve(target, "pinv"), atol=1e-4)  # the least-squares step on sae_ts's target
    assert torch.nn.functional.cosine_similarity(d, v.directions[9], dim=0) < 0.999  # another step than SAE-TS's


def read_effects(sae, em):
    from sas.activations.sae_cache import read_cached

    tensors, _ = read_cached(sae, "effect_map", em.meta["settings"])
    return tensors["effects"].float(), tensors["features"]
