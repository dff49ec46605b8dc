"""Sparse activation steering, feature inspection and comparison runs: the tiny model with random
SAEs for the mechanics, the real gemma-3-270m with a shipped SAE for the behaviour."""

import warnings

import pytest
import torch
from conftest import hooks_left
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig

from sas.forward.generate import generate
from sas.methods.sas import sas_vector_from_texts, sparse_diff
from sas.steering.sparse import SparseVector, sigma
from sas.steering import steer

LAYER = 1


def random_sae(d_in=32, d_sae=128, layer=LAYER, arch="jumprelu", seed=0, b_dec_in=True):
    torch.manual_seed(seed)
    if arch == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=b_dec_in))
    else:
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=8, apply_b_dec_to_input=b_dec_in))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.W_dec.normal_(0, 0.3)
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
        if arch == "jumprelu":
            sae.threshold.uniform_(0.0, 0.3)
    sae.cfg.metadata.hook_name = f"blocks.{layer}.hook_resid_post"
    sae.cfg.metadata.model_name = "tiny"
    sae.requires_grad_(False)
    return sae


def _vector(sae, model, features=(3, 7, 50), values=(1.0, -2.0, 0.5)):
    code = torch.zeros(sae.cfg.d_sae)
    code[list(features)] = torch.tensor(values)
    return SparseVector({LAYER: code}, {LAYER: sae}, model.cfg.model_name, sae_names={LAYER: "random"})


def _resid_after(model, tokens, vec, mult, positions="all"):
    store = {}
    name = f"blocks.{LAYER}.hook_resid_post"
    with steer(model, vec, mult, positions=positions):
        # a second hook on the same point runs after the steering hook and sees the edited residual
        with model.hooks(fwd_hooks=[(name, lambda x, hook: store.__setitem__("x", x.clone()))]):
            model(tokens, stop_at_layer=LAYER + 1)
    return store["x"]


TOKENS = torch.tensor([[2, 651, 5304, 563, 1091, 8088]])


# --------------------------------------------------------------------------- the selection rule
def test_sparse_diff_keeps_frequent_one_sided_features():
    pos = torch.zeros(10, 6)
    neg = torch.zeros(10, 6)
    pos[:, 0] = 2.0  # always on the positive side only: kept
    pos[:8, 1] = 1.0
    neg[:8, 1] = 1.0  # frequent on both sides: dropped
    pos[:1, 2] = 5.0  # fires on 10% of positive rows: below tau=0.2
    neg[:5, 3] = 4.0  # negative side only, half the rows
    v, info = sparse_diff(pos, neg, tau=0.2, mean="all")
    assert v.tolist() == [2.0, 0.0, 0.0, -2.0, 0.0, 0.0]
    assert info["n_both"] == 1 and info["n_features"] == 2
    v_active, _ = sparse_diff(pos, neg, tau=0.2, mean="active")
    assert v_active.tolist() == [2.0, 0.0, 0.0, -4.0, 0.0, 0.0]  # averaged where the feature fires
    v_top, _ = sparse_diff(pos, neg, tau=0.2, mean="active", top_k=1)
    assert (v_top != 0).sum() == 1 and v_top[3] == -4.0


def test_sparse_diff_bad_input():
    z = torch.rand(4, 6)
    with pytest.raises(ValueError, match="tau"):
        sparse_diff(z, z, tau=1.5)
    with pytest.raises(ValueError, match="no features left"):
        sparse_diff(z, z, tau=0.5)  # every feature fires on both sides
    with pytest.raises(ValueError, match="mean"):
        sparse_diff(z, z, mean="median")


# ------------------------------------------------------------------------------- steering paths
@pytest.mark.parametrize("b_dec_in", [True, False])
def test_fast_path_equals_full_path(tiny, b_dec_in):
    sae = random_sae(b_dec_in=b_dec_in)
    vec = _vector(sae, tiny)
    for mult in (-3.0, 0.7, 4.0):
        vec.fast = True
        fast = _resid_after(tiny, TOKENS, vec, mult)
        vec.fast = False
        full = _resid_after(tiny, TOKENS, vec, mult)
        rel = ((fast - full).norm(dim=-1) / full.norm(dim=-1)).max().item()
        assert rel <= 1e-5, rel


def test_full_path_is_the_paper_formula(tiny):
    sae = random_sae()
    vec = _vector(sae, tiny)
    vec.fast = False
    base = _resid_after(tiny, TOKENS, vec, 0.0)[0]
    z = sae.encode(base)
    expected = sae.decode(sigma(sae, z + 2.0 * vec.codes[LAYER])) + (base - sae.decode(z))
    assert torch.allclose(_resid_after(tiny, TOKENS, vec, 2.0)[0], expected, atol=1e-5)


def test_zero_multiplier_and_zero_support_leave_the_residual_alone(tiny):
    sae = random_sae()
    vec = _vector(sae, tiny)
    base = _resid_after(tiny, TOKENS, _vector(sae, tiny), 0.0)
    assert torch.equal(_resid_after(tiny, TOKENS, vec, 0.0), base)
    # reconstruction error is kept: a feature pushed far below its threshold when inactive changes nothing
    z = sae.encode(base[0])
    silent = (z == 0).all(0).nonzero()[:, 0]
    assert len(silent), "the random SAE should have features that never fire on these tokens"
    off = _vector(sae, tiny, features=(int(silent[0]),), values=(-100.0,))
    assert torch.allclose(_resid_after(tiny, TOKENS, off, 1.0), base, atol=1e-6)


def test_topk_sae_takes_the_full_path_without_a_warning(tiny):
    """TopK re-applied to the edited code needs the whole code: the full path is TopK's only exact path (and the
    default SAEs are TopK), so it is taken silently; other SAEs without an elementwise activation still warn."""
    sae = random_sae(arch="topk")
    vec = _vector(sae, tiny)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _resid_after(tiny, TOKENS, vec, 3.0)
        base = _resid_after(tiny, TOKENS, vec, 0.0)
    z = sae.encode(base[0])
    expected = sae.decode(sigma(sae, z + 3.0 * vec.codes[LAYER])) + (base[0] - sae.decode(z))
    assert torch.allclose(out[0], expected, atol=1e-5)


def test_the_relu_edit_adds_features_to_a_topk_code_without_evicting_the_tokens_own(tiny):
    """edit="relu": decode(relu(z + m v)) + error. On a TopK SAE the SAE's own sigma re-applies TopK, so a feature
    the vector turns on takes the slot of one of the token's own features; the ReLU edit changes the support only.
    On a JumpReLU SAE (fast path) it drops the thresholds on the edited code, and equals the full path."""
    from dataclasses import replace

    sae = random_sae(arch="topk")
    base = _resid_after(tiny, TOKENS, _vector(sae, tiny), 0.0)[0]
    z = sae.encode(base)
    off = (z == 0).all(0).nonzero()[:, 0][:3].tolist()  # features no token uses: the vector turns them on
    sas = _vector(sae, tiny, features=off, values=(5.0, 5.0, 5.0))
    relu = replace(sas, edit="relu")
    out_sas, out_relu = _resid_after(tiny, TOKENS, sas, 1.0)[0], _resid_after(tiny, TOKENS, relu, 1.0)[0]
    err = base - sae.decode(z)
    code_relu = torch.relu(z + relu.codes[LAYER])
    assert torch.allclose(out_relu, sae.decode(code_relu) + err, atol=1e-5)
    own = (z > 0) & (relu.codes[LAYER] == 0)
    assert ((code_relu > 0) | ~own).all()  # every feature the token had is still on
    code_sas = sigma(sae, z + sas.codes[LAYER])
    assert torch.allclose(out_sas, sae.decode(code_sas) + err, atol=1e-5)
    evicted = (own & (code_sas == 0)).sum(1)
    assert (evicted == 3).all()  # three features in, three of the token's own out: TopK keeps k
    jr = random_sae()
    for vec in (_vector(jr, tiny), _vector(jr, tiny, features=(3, 7, 50), values=(0.05, -2.0, 0.05))):
        fast = replace(vec, edit="relu")
        full = replace(fast, fast=False)
        a, b = _resid_after(tiny, TOKENS, fast, 1.5), _resid_after(tiny, TOKENS, full, 1.5)
        assert torch.allclose(a, b, atol=1e-5)
        zz = jr.encode(_resid_after(tiny, TOKENS, vec, 0.0)[0])
        assert torch.allclose(b[0], jr.decode(torch.relu(zz + 1.5 * vec.codes[LAYER])) +
                              (_resid_after(tiny, TOKENS, vec, 0.0)[0] - jr.decode(zz)), atol=1e-5)
    with pytest.raises(ValueError, match="edit must be one of"):
        replace(sas, edit="relu6")


def test_sparse_vectors_add_codes_and_scale(tiny):
    sae = random_sae()
    a, b = _vector(sae, tiny), _vector(sae, tiny, features=(3, 9), values=(1.0, 1.0))
    c = a + b
    assert c.codes[LAYER][3] == 2.0 and c.codes[LAYER][9] == 1.0 and c.codes[LAYER][7] == -2.0
    assert torch.equal((2 * a).codes[LAYER], 2 * a.codes[LAYER])
    assert torch.equal((a - a).codes[LAYER], torch.zeros(sae.cfg.d_sae))
    other = _vector(random_sae(seed=1), tiny)
    other.sae_names = {LAYER: "another"}
    with pytest.raises(ValueError, match="different SAEs"):
        a + other


def test_to_dense_is_w_dec_transpose_v(tiny):
    sae = random_sae()
    vec = _vector(sae, tiny)
    d = vec.to_dense()
    assert d.method == "sas_dense"
    assert torch.allclose(d.directions[LAYER], vec.codes[LAYER] @ sae.W_dec, atol=1e-6)


def test_sparse_and_dense_combine_in_one_context(tiny):
    sae = random_sae()
    vec = _vector(sae, tiny)
    dense = vec.to_dense()
    sparse_only = _resid_after(tiny, TOKENS, vec, 1.0)
    both = _resid_after(tiny, TOKENS, [vec, dense], [1.0, 0.5])
    assert torch.allclose(both, sparse_only + 0.5 * dense.directions[LAYER], atol=1e-5)
    with steer(tiny, [vec, dense], [1.0, 1.0], positions="all"):
        # one hook per hook point applies both terms in order (so the receipt sees the whole edit there)
        assert len(tiny.hook_dict[f"blocks.{LAYER}.hook_resid_post"].fwd_hooks) == 1
        generate(tiny, ["Hello there"], max_new_tokens=3)
    assert not hooks_left(tiny)


def test_hooks_removed_after_an_error(tiny):
    vec = _vector(random_sae(), tiny)
    with pytest.raises(RuntimeError):
        with steer(tiny, vec, 2.0):
            raise RuntimeError("boom")
    assert not hooks_left(tiny)


def test_save_load_round_trip(tiny, tmp_path):
    sae = random_sae()
    vec = _vector(sae, tiny)
    vec.settings = {"tau": 0.1}
    path = vec.save(tmp_path / "v")
    back = SparseVector.load(path, saes={LAYER: sae})
    assert torch.equal(back.codes[LAYER], vec.codes[LAYER]) and back.settings == {"tau": 0.1}
    assert back.sae_names == {LAYER: "random"}
    with pytest.raises(FileNotFoundError):
        SparseVector.load(tmp_path / "missing")


def test_code_width_must_match_the_sae(tiny):
    sae = random_sae()
    with pytest.raises(ValueError, match="features"):
        SparseVector({LAYER: torch.zeros(7)}, {LAYER: sae}, "tiny")


def test_sas_vector_from_texts_on_tiny(tiny):
    sae = random_sae()
    pos = ["I feel happy", "This is great", "What a lovely day"]
    neg = ["I feel sad", "This is awful", "What a gloomy day"]
    v = sas_vector_from_texts(tiny, sae, pos, neg, tau=0.0)
    assert v.n_features()[LAYER] == v.settings["n_features"] > 0
    assert (v.features() < sae.cfg.d_sae).all()


# ------------------------------------------------------------------------------------ inspection
def test_feature_inspection_on_tiny(tiny):
    from sas.evaluation.features import logit_effects, overlap, top_contexts

    sae = random_sae()
    eff = logit_effects(tiny, sae, [3, 7], k=4)
    assert len(eff) == 2 and len(eff.promoted[0]) == 4
    with pytest.raises(IndexError, match="out of range"):
        logit_effects(tiny, sae, [sae.cfg.d_sae])
    texts = ["The quick brown fox jumps over the lazy dog. " * 20]
    ctx = top_contexts(tiny, sae, [3, 7], texts, k=2, context=32, max_tokens=200)
    assert set(ctx.feature) <= {3, 7} and ctx.context.str.contains(r"\[\[").all()
    a, b = _vector(sae, tiny), _vector(sae, tiny, features=(3, 9), values=(1.0, 1.0))
    m = overlap({"a": a, "b": b})
    assert m.loc["a", "a"] == 1.0 and m.loc["a", "b"] == pytest.approx(1 / 4)


def test_contexts_read_from_the_feature_cache_match_a_pass_over_the_text(tiny, tmp_path):
    from sas.activations.feature_cache import feature_cache
    from sas.evaluation.features import cached_contexts, top_contexts

    sae = random_sae()
    texts = ["The quick brown fox jumps over the lazy dog. " * 20, "A cat sat on the mat by the door, twice. " * 20]
    feats = [3, 7, 11, 40]
    direct = top_contexts(tiny, sae, feats, texts, k=1)
    cached = cached_contexts(tiny, feature_cache(tiny, sae, texts, cache_dir=tmp_path), feats, k=2)
    assert list(cached.columns) == list(direct.columns) and len(direct) >= 2
    for f in feats:
        d, c = direct[direct.feature == f], cached[cached.feature == f]
        assert len(c) == (2 if len(d) else 0)
        if len(d):  # the same best token, activation, left context and firing frequency
            assert (c.token.iloc[0], c.context.iloc[0].split("[[")[0]) == (d.token.iloc[0],
                                                                          d.context.iloc[0].split("[[")[0])
            assert c.activation.iloc[0] == pytest.approx(d.activation.iloc[0], rel=1e-4)
            assert c.frequency.iloc[0] == pytest.approx(d.frequency.iloc[0])
            assert c.activation.iloc[0] >= c.activation.iloc[1] > 0


# ------------------------------------------------------------------------ the real model and SAE
@pytest.fixture(scope="module")
def shipped_sae(gemma):
    from sas.load.saes import load_sae, registry

    names = [n for n, c in registry().items() if c.get("model") == "gemma-3-270m"]
    if not names:
        pytest.fail("no shipped SAE for gemma-3-270m in saes/")
    name = min(names, key=lambda n: registry()[n].get("width", 0))
    sae = load_sae(name, gemma)
    sae.sas_name = name
    return sae


@pytest.mark.slow
def test_fast_path_equals_full_path_on_gemma(gemma, shipped_sae):
    from sas.concepts.tasks import sentiment_pairs

    pos, neg = sentiment_pairs()
    v = sas_vector_from_texts(gemma, shipped_sae, pos, neg, tau=0.1)
    layer = v.layers[0]
    tokens = gemma.to_tokens(["The weather today is mild and the streets are quiet."])
    store = {}
    for fast in (True, False):
        v.fast = fast
        with steer(gemma, v, 4.0, positions="all"):
            with gemma.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_post",
                                         lambda x, hook, f=fast: store.__setitem__(f, x.clone()))]):
                gemma(tokens, stop_at_layer=layer + 1)
    rel = ((store[True] - store[False]).norm(dim=-1) / store[False].norm(dim=-1)).max().item()
    assert rel <= 1e-4, rel
    assert not hooks_left(gemma)


# ----------------------------------------------------------------------------------- compare runs
@pytest.mark.slow  # tiny model, but minutes of CPU: out of the fast lane
def test_compare_rows_resume_and_one_unsteered_evaluation(tiny, tmp_path, monkeypatch):
    """compare writes one row per method x layer x multiplier, evaluates the unsteered model once
    (multiplier 0 is the same for every method), and a rerun adds nothing."""
    import sas.runs.compare as C

    sae = random_sae()
    calls = []
    from sas.evaluation.ab import ABScorer
    from sas.runs.store import read_rows

    real = ABScorer.score
    monkeypatch.setattr(ABScorer, "score", lambda self, *a, **k: calls.append(a[1]) or real(self, *a, **k))
    out = tmp_path / "c.jsonl"
    df = C.compare(tiny, {LAYER: sae}, ["sycophancy"], multipliers={"caa": [-1, 0, 1], "sas": [0, 4],
                   "sas_dense": [4]}, out=out, n_test=4, progress=False)
    assert len(df) == 6 and set(df.method) == set(C.METHODS)
    assert calls.count(0) == 1 and len(calls) == 5
    zero = df[df.multiplier == 0]
    assert zero.p_match.nunique() == 1 and (zero.resid_change == 0).all()
    assert df[df.method == "sas"].n_features.notna().all() and df[df.method == "caa"].n_features.isna().all()
    calls.clear()
    C.compare(tiny, {LAYER: sae}, ["sycophancy"], multipliers={"caa": [-1, 0, 1], "sas": [0, 4],
              "sas_dense": [4]}, out=out, n_test=4, progress=False)
    assert calls == [] and len(read_rows(out)) == 6


def test_compare_without_one_sided_features_keeps_caa_and_says_so(tiny):
    """A behaviour whose features all fire on both sides has no SAS vector: compare warns and keeps
    CAA instead of stopping a seven-behaviour run."""
    from sas.activations.contrast import Contrast
    from sas.runs.grid import Grid, Runner

    sae = random_sae()
    acts = {LAYER: torch.randn(20, 32)}
    same = Contrast("sycophancy", positive=["a"] * 20, negative=["b"] * 20)
    # every feature fires on both sides; the sides differ slightly, so CAA has a direction (a zero one edits nothing)
    same._acts[(tiny.cfg.model_name, str(tiny.cfg.dtype))] = (acts, {LAYER: acts[LAYER] + 1e-3})
    grid = Grid("ab", ["sycophancy"], ["caa", "sas", "sas_dense"], [LAYER], {m: [1.0] for m in ("caa", "sas", "sas_dense")},
                "tiny", eval_settings={"n_test": 2}, saes={LAYER: "random"})
    runner = Runner(grid, tiny, {LAYER: sae}, progress=False)
    runner.items["sycophancy"].__dict__["contrast"] = same
    with pytest.warns(UserWarning, match="no SAS vector"):
        rows = {r["method"]: r for r in runner.run(grid.conditions())}
    assert "p_match" in rows["caa"] and "skipped" not in rows["caa"]
    assert "no one-sided" in rows["sas"]["skipped"] or "no features" in rows["sas"]["skipped"]
    assert "skipped" in rows["sas_dense"] and "p_match" not in rows["sas_dense"]


def test_a_gated_sae_takes_the_full_path_with_a_warning(tiny):
    """sae-lens's gated SAE has no b_enc and gates with a second pre-activation: the fast path would be wrong,
    so the hook warns and makes the full edit decode(relu(z + m v)) - decode(z)."""
    from sae_lens import GatedSAE, GatedSAEConfig

    torch.manual_seed(0)
    sae = GatedSAE(GatedSAEConfig(d_in=32, d_sae=64))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
    sae.cfg.metadata.hook_name = f"blocks.{LAYER}.hook_resid_post"
    v = torch.zeros(64)
    v[[2, 9]] = torch.tensor([1.5, -0.5])
    vec = SparseVector({LAYER: v}, {LAYER: sae}, "tiny", sae_names={LAYER: "gated"})
    x = torch.randn(1, 5, 32)
    with pytest.warns(UserWarning, match="no elementwise activation"):
        out = vec.hook(LAYER, 2.0, "all")(x)
    with torch.no_grad():
        z = sae.encode(x[0])
        want = x[0] + sae.decode(torch.relu(z + 2.0 * v)) - sae.decode(z)
    torch.testing.assert_close(out[0], want, rtol=1e-5, atol=1e-5)
