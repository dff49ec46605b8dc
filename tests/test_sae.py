"""SAE loading (every format), checks and bad input, feature basics, a tiny training run, and the shipped SAEs."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import sas.activations.codes as SC
import sas.activations.residual as SR
import sas.evaluation.sae_quality as SQ
import sas.load.saes as S

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "sas" / "data" / "text" / "enwiki_heldout_sample.jsonl"  # shipped: tests read no data outside
TRAIN = ROOT / "tests" / "data" / "enwiki_train_sample.jsonl"  # the repository (see tests/data/README.md)
D_IN, D_SAE = 16, 48


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"w_enc": torch.randn(D_IN, D_SAE, generator=g) / 4, "w_dec": torch.randn(D_SAE, D_IN, generator=g) / 4,
            "b_enc": torch.randn(D_SAE, generator=g) / 10, "b_dec": torch.randn(D_IN, generator=g),
            "threshold": torch.rand(D_SAE, generator=g) / 5}


def _direct_jumprelu(p, hook="blocks.3.hook_resid_post"):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    cfg = JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False)
    cfg.metadata.hook_name = hook
    sae = JumpReLUSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(p["w_enc"]), sae.W_dec.copy_(p["w_dec"]), sae.b_enc.copy_(p["b_enc"])
        sae.b_dec.copy_(p["b_dec"]), sae.threshold.copy_(p["threshold"])
    return sae


def _fake_model(d_model=D_IN, name="gemma-3-270m", layers=18):
    hooks = {f"blocks.{i}.hook_resid_post": None for i in range(layers)}
    # the weights' device and the compute dtype are what load_sae reads from a model (SAEs follow them)
    return SimpleNamespace(cfg=SimpleNamespace(d_model=d_model, model_name=name, dtype=torch.float32),
                           hook_dict=hooks, W_E=torch.zeros(1, d_model), blocks=[torch.nn.Linear(1, 1)] * layers)


# ------------------------------------------------------------------------------------- formats
def test_load_sae_lens_folder(tmp_path):
    sae = _direct_jumprelu(_params())
    sae.cfg.metadata.model_name = "gemma-3-270m"
    sae.save_model(tmp_path / "sae")
    loaded = S.load_sae(tmp_path / "sae", model=_fake_model())
    assert torch.equal(loaded.W_enc, sae.W_enc) and torch.equal(loaded.threshold, sae.threshold)
    assert loaded.cfg.metadata.hook_name == "blocks.3.hook_resid_post"


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_gemma_scope_converter_matches_direct_sae(tmp_path, fmt):
    p = _params(1)
    folder = tmp_path / "layer_3" / "width_16k" / "average_l0_20"
    folder.mkdir(parents=True)
    if fmt == "npz":  # Gemma Scope: numpy float32 arrays
        np.savez(folder / "params.npz", **{k: v.numpy() for k, v in p.items()})
    else:  # Gemma Scope 2
        save_file({k: v.contiguous() for k, v in p.items()}, folder / "params.safetensors")
    loaded = S.load_sae(folder)
    direct = _direct_jumprelu(p)
    assert loaded.cfg.metadata.hook_name == "blocks.3.hook_resid_post"
    assert loaded.cfg.d_in == D_IN and loaded.cfg.d_sae == D_SAE
    x = torch.randn(64, D_IN) * 3
    f = loaded.encode(x)
    assert (f > 0).any() and (f == 0).any()
    torch.testing.assert_close(f, direct.encode(x))
    torch.testing.assert_close(loaded.decode(f), direct.decode(f))
    torch.testing.assert_close(loaded(x), direct(x))


def test_gemma_scope_converter_needs_a_layer_or_override(tmp_path):
    np.savez(tmp_path / "params.npz", **{k: v.numpy() for k, v in _params().items()})
    with pytest.raises(ValueError, match="hook_name"):
        S.load_sae(tmp_path)
    cfg, state = S.gemma_scope_converter(tmp_path, cfg_overrides={"hook_name": "blocks.7.hook_resid_post"})
    assert cfg["hook_name"] == "blocks.7.hook_resid_post" and state["W_enc"].shape == (D_IN, D_SAE)


def test_folder_without_sae(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no SAE"):
        S.load_sae(tmp_path)


# ------------------------------------------------------------------------------------ registry
@pytest.fixture
def registry_dir(tmp_path, monkeypatch):
    sae = _direct_jumprelu(_params(2))
    sae.cfg.metadata.model_name = "gemma-3-270m"
    sae.save_model(tmp_path / "toy-L3")
    card = {"name": "toy-L3", "model": "gemma-3-270m", "hook": "blocks.3.hook_resid_post",
            "sha256": S.sha256(tmp_path / "toy-L3" / S.WEIGHTS)}
    (tmp_path / "toy-L3.json").write_text(json.dumps(card))
    monkeypatch.setattr(S, "SAE_DIR", tmp_path)
    return tmp_path


def test_registry_load_by_name(registry_dir):
    assert "toy-L3" in S.registry()
    sae = S.load_sae("toy-L3", model=_fake_model())
    assert sae.cfg.d_sae == D_SAE


def test_registry_hash_mismatch(registry_dir):
    weights = registry_dir / "toy-L3" / S.WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256.*git checkout"):
        S.load_sae("toy-L3")


def test_the_default_sae_per_layer_is_the_marked_one_then_the_most_trained(tmp_path, monkeypatch):
    """Old SAEs stay loadable by name; without --sae a layer gets the card marked default, else the SAE trained on
    the most tokens, else the narrowest; --width picks among that width only."""
    def card(name, layer, width, tokens, default=False):
        c = {"name": name, "model": "gemma-3-270m", "hook": f"blocks.{layer}.hook_resid_post", "width": width,
             "training": {"tokens_seen": tokens}}
        (tmp_path / f"{name}.json").write_text(json.dumps({**c, "default": True} if default else c))
    card("old-L9-4k", 9, 4096, 1_500_000)
    card("old-L9-16k", 9, 16384, 1_000_000)
    card("old-L5-4k", 5, 4096, 1_500_000)
    monkeypatch.setattr(S, "SAE_DIR", tmp_path)
    assert S.select_saes("gemma-3-270m") == ["old-L5-4k", "old-L9-4k"]
    card("new-L9-4k", 9, 4096, 30_000_000)
    card("new-L9-16k", 9, 16384, 30_000_000, default=True)
    card("new-L5-16k", 5, 16384, 30_000_000, default=True)
    assert S.select_saes("gemma-3-270m") == ["new-L5-16k", "new-L9-16k"]
    assert S.select_saes("gemma-3-270m", width=4096) == ["old-L5-4k", "new-L9-4k"]
    assert S.select_saes("gemma-3-270m", layers=[9], width=16384) == ["new-L9-16k"]


def test_registry_missing_weights(registry_dir):
    (registry_dir / "toy-L3" / S.WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        S.load_sae("toy-L3")


# ----------------------------------------------------------------------------- bad input, checks
def test_unknown_release_and_id():
    with pytest.raises(ValueError, match="unknown sae-lens release.*gemma-scope-2b-pt-res-canonical"):
        S.load_sae("gemma-scope-2b-pt-res-canonica/layer_12/width_16k/canonical")
    with pytest.raises(ValueError, match="unknown id"):
        S.load_sae(("gemma-scope-2b-pt-res-canonical", "layer_99/width_16k/canonical"))
    with pytest.raises(ValueError, match="unknown SAE"):
        S.load_sae("no-such-sae")


def test_offline_release_gives_a_clear_error(monkeypatch):
    from sae_lens import SAE

    def offline(*a, **k):
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(SAE, "from_pretrained", offline)
    with pytest.raises(OSError, match="hub is unreachable"):
        S.load_sae("gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical")


def test_checks_against_the_model(tmp_path):
    sae = _direct_jumprelu(_params())
    sae.cfg.metadata.model_name = "gemma-3-270m"
    S.check_sae_fits(sae, _fake_model())
    with pytest.raises(ValueError, match="input width 16 differs"):
        S.check_sae_fits(sae, _fake_model(d_model=640))
    with pytest.raises(ValueError, match="trained on 'gemma-3-270m'"):
        S.check_sae_fits(sae, _fake_model(name="gemma-2-2b"))
    with pytest.raises(ValueError, match="does not have"):
        S.check_sae_fits(sae, _fake_model(layers=2))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        S.check_sae_fits(sae, _fake_model(name="gemma-2-2b"), strict=False)
    assert any("trained on" in str(x.message) for x in w)


def test_corpus_without_text(tmp_path):
    train = _script("train_sae")
    with pytest.raises(FileNotFoundError, match="no .jsonl or .txt"):
        train.corpus_files([str(tmp_path)])
    with pytest.raises(ValueError, match="held-out"):
        train.corpus_files([str(tmp_path / "enwiki-2014-heldout")])


# --------------------------------------------------------------------------------- features
def test_feature_basics():
    sae = _direct_jumprelu(_params())
    x = torch.randn(100, D_IN) * 3
    codes = SC.encode(sae, x, batch_size=7)
    torch.testing.assert_close(codes, sae.encode(x))
    freq = SC.feature_frequency(sae, x, batch_size=7)
    torch.testing.assert_close(freq, (codes > 0).float().mean(0))
    torch.testing.assert_close(SC.decoder_direction(sae, 5), sae.W_dec[5])
    with pytest.raises(IndexError):
        SC.decoder_direction(sae, D_SAE)
    m = SQ.reconstruction_metrics(sae, x, batch_size=13)
    ev = 1 - (sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert m["explained_variance"] == pytest.approx(ev.item(), rel=1e-4)
    assert m["mean_l0"] == pytest.approx((codes > 0).sum(1).float().mean().item())


def test_firing_counts_one_streamed_pass_equals_cached_activations(tiny):
    """Dead-feature counting over many tokens streams the model once for several hooks; it must count
    exactly what encoding the stored activations of each hook counts."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    saes = {}
    for layer in (0, 2):
        torch.manual_seed(layer)
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=32, d_sae=64))
        with torch.no_grad():
            sae.W_enc.normal_(0, 0.3)
            sae.threshold.fill_(0.5)
            sae.threshold[0] = 1e9  # a dead feature
        sae.cfg.metadata.hook_name = f"blocks.{layer}.hook_resid_post"
        saes[f"L{layer}"] = sae
    tokens = SR.token_chunks(tiny, ["The quick brown fox jumps over the lazy dog. " * 30], context=32)
    counts, n = SC.firing_counts(tiny, saes, tokens, batch_size=3)
    for name, sae in saes.items():
        acts = SR.hook_activations(tiny, tokens, sae.cfg.metadata.hook_name)
        assert n == len(acts)
        torch.testing.assert_close(counts[name].float() / n, SC.feature_frequency(sae, acts))
    assert counts["L0"][0] == counts["L2"][0] == 0 and (counts["L0"][1:] > 0).any()


def test_token_chunks_follow_the_models_bos_rule(tiny, monkeypatch):
    """Rows of ``context`` tokens start with BOS for a model that reads text after one, and with text for one that
    does not (SmolLM2): one BOS rule (sas.load.prompts.bos_ids) for chunks, prompts and pairs."""
    text = ["The quick brown fox jumps over the lazy dog. " * 30]
    with_bos = SR.token_chunks(tiny, text, context=32)
    assert with_bos.shape[1] == 32 and (with_bos[:, 0] == tiny.tokenizer.bos_token_id).all()
    monkeypatch.setattr(tiny.cfg, "default_prepend_bos", False)
    without = SR.token_chunks(tiny, text, context=32)
    assert without.shape[1] == 32 and not (without[:, 0] == tiny.tokenizer.bos_token_id).any()
    assert without.flatten()[:40].tolist() == [t for t in with_bos[:, 1:].flatten().tolist()][:40]


# ---------------------------------------------------------------------------- real model

@pytest.mark.slow
def test_tiny_training_run(tmp_path):
    """End to end on the real model: ~20k tokens of activations, two tiny SAEs, export as JumpReLU, resume."""
    train = _script("train_sae")
    from sas.load.device import native_bfloat16

    dtype = "bfloat16" if native_bfloat16() else "float32"
    argv = ["--corpus", str(TRAIN), "--data", str(ROOT / "sas" / "data"), "--sae", "9:256", "--sae", "5:256", "--k", "16", "--tokens", "16000",
            "--batch", "512", "--checkpoints", "3", "--dtype", dtype, "--out", str(tmp_path)]
    train.main(argv)
    for name in ("L9-w256", "L5-w256"):
        sae = S.load_sae(tmp_path / "final" / name)
        assert sae.cfg.architecture() == "jumprelu" and sae.cfg.d_in == 640
        assert (sae.threshold > 0).all()
    log = [json.loads(line) for line in open(tmp_path / "train_log.jsonl")]
    assert {r["sae"] for r in log} == {"L9-w256", "L5-w256"}
    # a rerun finds the finished checkpoint and the cached activations, and does not start over
    assert train.latest_checkpoint(tmp_path / "checkpoints").name.startswith("final_")
    # --export-only --ship writes registry entries whose card records the training command, not the export one
    train.main(argv + ["--export-only", "--ship", str(tmp_path / "saes")])
    card = json.loads((tmp_path / "saes" / "gemma-3-270m-L9-256.json").read_text())
    assert "--export-only" not in card["training"]["command"] and "--export-only" in card["training"]["export_command"]
    assert card["width"] == 256 and card["status"] == "complete" and card["metrics"] == {}
    assert card["sha256"] == S.sha256(tmp_path / "saes" / "gemma-3-270m-L9-256" / S.WEIGHTS)


@pytest.mark.slow
def test_shipped_sae_reproduces_its_card(gemma):
    """Load each shipped SAE by name and re-measure its card's held-out metrics on a small sample."""
    cards = {n: c for n, c in S.registry().items() if c.get("metrics")}
    if not cards:
        pytest.skip("no SAE with measured metrics is shipped in saes/ yet")
    heldout_texts = _script("evaluate_sae").heldout_texts
    for name, card in cards.items():
        texts = heldout_texts(HELDOUT)
        sae = S.load_sae(name, gemma)
        m = SQ.evaluate_sae(gemma, sae, texts, n_tokens=8_000, n_ce_tokens=512)  # small: the model is float32
        ref = card["metrics"]["heldout"]
        assert m.explained_variance == pytest.approx(ref["explained_variance"], abs=0.05), name
        assert m.mean_l0 == pytest.approx(ref["mean_l0"], rel=0.25), name
        assert m.ce_loss_recovered == pytest.approx(ref["ce_loss_recovered"], abs=0.06), name


@pytest.mark.slow
def test_a_gemma_scope_2_folder_gets_the_same_card_as_the_same_weights_in_the_registry(tmp_path, capsys):
    """The card command for a Gemma Scope 2 SAE (what a user with the hub compares against), run on a local folder in
    that release's format (params.safetensors: w_enc, w_dec, b_enc, b_dec, threshold) holding a shipped SAE's weights:
    every field of the card, the loss difference and KL with their intervals included, equals the registry SAE's."""
    from safetensors.torch import load_file

    name = "gemma-3-270m-L9-4k"
    w = {k: v.float() for k, v in load_file(S.SAE_DIR / name / S.WEIGHTS).items()}
    folder = tmp_path / "layer_9_width_4k_l0_small"
    folder.mkdir()
    # Gemma Scope encodes x @ w_enc + b_enc (no b_dec subtracted first): the same SAE moves b_dec into b_enc
    w["b_enc"] = w["b_enc"] - w["b_dec"] @ w["W_enc"]
    save_file({k.lower(): v.contiguous() for k, v in w.items()}, folder / "params.safetensors")
    evaluate = _script("evaluate_sae")
    evaluate.main(["--sae", name, "--sae", str(folder), "--heldout", str(HELDOUT), "--data", str(ROOT / "sas" / "data"),
                   "--tokens", "2000", "--ce-tokens", "508", "--sentiment-prompts", "8", "--ab-prompts", "8",
                   "--dtype", "float32"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    cards = {k: v for row in rows for k, v in row.items()}
    ours, scope = cards[name]["heldout"], cards[str(folder)]["heldout"]
    for key in ("loss_delta", "kl", "explained_variance", "mean_l0", "dead_fraction", "dense_fraction",
                "ce_loss_recovered"):
        assert scope[key] == pytest.approx(ours[key], rel=1e-3, abs=1e-4), key
    assert ours["loss_delta_ci"][0] <= ours["loss_delta"] <= ours["loss_delta_ci"][1]
    assert ours["loss_delta"] > 0.05 and ours["kl"] > 0.05  # splicing a 1.5M-token SAE in costs the model
    assert "loss_delta <= 0.25 at mean_l0 <= 80" in cards[name]["targets"]


@pytest.mark.parametrize("key, edit", [("W_dec", lambda t: t * 1e30),
                                       ("W_dec", lambda t: t.index_fill(0, torch.tensor([7]), float("inf"))),
                                       ("threshold", lambda t: t.index_fill(0, torch.tensor([3]), float("nan"))),
                                       ("W_enc", lambda t: t.index_fill(1, torch.tensor([0]), float("-inf")))])
def test_an_sae_with_weights_that_cannot_steer_is_refused_at_load(tmp_path, key, edit):
    from safetensors.torch import load_file

    src = ROOT / "saes" / "gemma-3-270m-L5-4k"
    folder = tmp_path / "sae"
    folder.mkdir()
    (folder / "cfg.json").write_text((src / "cfg.json").read_text())
    weights = load_file(src / "sae_weights.safetensors")
    assert S.load_sae(src).W_dec.shape == weights["W_dec"].shape  # the shipped one loads
    weights[key] = edit(weights[key])
    save_file(weights, folder / "sae_weights.safetensors")
    with pytest.raises(ValueError, match=rf"sae_weights.safetensors: {key} holds .*this SAE cannot steer"):
        S.load_sae(folder)


@pytest.mark.slow
def test_the_default_saes_are_the_30m_topk_ones_and_sas_moves_a_topic_through_them(gemma_fast):
    """Commands without --sae take the SAEs `sas train-sae` trained on 30M tokens (TopK, k=64). A SAS vector of the
    weddings concept in the layer-9 one, at a benchmark strength, puts weddings into sampled continuations where the
    unsteered model rarely goes (paired over the same prompts and sampling seeds)."""
    from sas.evaluation.stats import paired_diff_ci
    from sas.methods.registry import build_vector
    from sas.runs.items import ConceptItem

    names = S.select_saes("gemma-3-270m")
    cards = S.registry()
    assert [S.layer_of(cards[n]["hook"]) for n in names] == [5, 9]
    assert all(cards[n]["architecture"] == "topk" and cards[n]["training"]["tokens_seen"] >= 30_000_000 and
               cards[n]["width"] == 16384 for n in names), names
    sae = S.load_sae(names[1], gemma_fast)
    item = ConceptItem("weddings", "tuning", n_prompts=32, max_new_tokens=16, n_calibration=32)
    vec = build_vector(gemma_fast, "sas", item.contrast, [9], {9: sae})
    assert 0 < int((vec.codes[9] != 0).sum()) < 500
    (steered, texts), = item.evaluate_many(gemma_fast, vec, [0.1], 9)
    unsteered, _ = item.evaluate(gemma_fast, None, 0.0, 9)
    d, lo, hi = paired_diff_ci(steered["scores"], unsteered["scores"])
    assert lo > 0, (d, lo, hi, texts[:4])


@pytest.mark.slow
def test_on_the_default_topk_sae_sas_evicts_the_tokens_own_features_and_sas_relu_does_not(gemma_fast):
    """At a benchmark strength, the paper's edit on a TopK SAE re-applies TopK: the weddings vector's features take
    the slots of a large share of each token's 64 features. sas_relu (ReLU as sigma) leaves every one of them on."""
    from sas.methods.registry import build_vector
    from sas.runs.items import ConceptItem
    from sas.steering.sparse import sigma
    from sas.steering.strength import layer_activations, raw_multiplier

    sae = S.load_sae(S.select_saes("gemma-3-270m", [9])[0], gemma_fast)
    item = ConceptItem("weddings", "tuning", n_prompts=16, n_calibration=16)
    evicted = {}
    for method in ("sas", "sas_relu"):
        vec = build_vector(gemma_fast, method, item.contrast, [9], {9: sae})
        acts = layer_activations(gemma_fast, item.prompts, vec, 9)
        m = raw_multiplier(vec, 9, acts, 0.1)
        z = sae.encode(acts.to(sae.dtype))
        c = z + m * vec.codes[9].to(z.dtype)
        z2 = sigma(sae, c) if vec.edit == "add" else torch.relu(c)
        own = (z > 0) & (vec.codes[9] == 0)
        evicted[method] = float((own & (z2 == 0)).sum(1).float().mean())
    assert evicted["sas"] > 10 and evicted["sas_relu"] == 0, evicted  # about 26 of 64 when measured
