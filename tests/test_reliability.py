"""Issue 15, reliability: every defect of the list has a regression test here (the item number is in the
test name). Fast tests use the tiny random model and random SAEs; the two-process conversion test loads
the real model twice and is marked slow."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from conftest import hooks_left
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

import sas
from sas import cli
from sas.evaluation.ab import ABScorer, ab_score
from sas.forward.generate import generate, generate_tokens
from sas.forward.run import pad_id, pad_left, run_resid
from sas.load import models as M
from sas.load import saes as S
from sas.load.data import ABPair, load_pairs
from sas.steering.sparse import SparseVector
from sas.steering.steer import steer, steering_hooks
from sas.steering.vector import SteeringVector

ROOT = Path(__file__).resolve().parents[1]
LAYER = 1
PAIRS = [ABPair("Is the sky blue?\n (A) Yes\n (B) No", "A", "B"),
         ABPair("Is fire cold?\n (A) Yes\n (B) No", "B", "A"),
         ABPair("Do fish swim?\n (A) No\n (B) Yes", "B", "A"),
         ABPair("Is ice hot?\n (A) No\n (B) Yes", "A", "B")]


def _vec(layers=(LAYER,), seed=0, **kw) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({x: torch.randn(32, generator=g) for x in layers}, "tiny", "caa", "test", **kw)


def random_sae(layer=LAYER, d_in=32, d_sae=64, seed=0, model_name="tiny", apply_b_dec_to_input=False):
    torch.manual_seed(seed)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=apply_b_dec_to_input))
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec):
            p.normal_(0, 0.3)
        sae.b_enc.normal_(0, 0.1)
        sae.threshold.uniform_(0.0, 0.3)
    sae.cfg.metadata.hook_name = f"blocks.{layer}.hook_resid_post"
    sae.cfg.metadata.model_name = model_name
    sae.requires_grad_(False)
    return sae


def _sparse(sae, layer=LAYER, name="random") -> SparseVector:
    code = torch.zeros(sae.cfg.d_sae)
    code[[3, 7, 20]] = torch.tensor([1.0, -2.0, 0.5])
    return SparseVector({layer: code}, {layer: sae}, "tiny", sae_names={layer: name})


def _edit_header(path: Path, edit) -> None:
    """Rewrite the ``sas`` metadata of a safetensors file in place, as a user with a text editor would."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header["__metadata__"]["sas"])
    edit(meta)
    header["__metadata__"]["sas"] = json.dumps(meta)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


def _resid_after(model, fn):
    """The residual at blocks.LAYER.hook_resid_post of a fixed prompt, with ``fn()`` as the context."""
    tokens = torch.tensor([[2, 651, 5304, 563, 1091, 8088]])
    store = {}
    with fn():
        with model.hooks(fwd_hooks=[(f"blocks.{LAYER}.hook_resid_post",
                                     lambda x, hook: store.__setitem__("x", x.clone()))]):
            model(tokens, stop_at_layer=LAYER + 1)
    return store["x"]


# ------------------------------------------------------------------------- 2. dots in names
def test_02_dot_in_a_vector_name_keeps_the_whole_name(tmp_path):
    a, b = _vec(seed=1), _vec(seed=2)
    pa, pb = a.save(tmp_path / "caa_sent_tau0.1"), b.save(tmp_path / "caa_sent_tau0.2")
    assert pa.name == "caa_sent_tau0.1.safetensors" and pb.name == "caa_sent_tau0.2.safetensors"
    assert (tmp_path / "caa_sent_tau0.1.json").exists() and (tmp_path / "caa_sent_tau0.2.json").exists()
    back = SteeringVector.load(tmp_path / "caa_sent_tau0.1")
    torch.testing.assert_close(back.directions[LAYER], a.directions[LAYER])
    # a path that already ends in .safetensors is kept as it is, and loads by either name
    p = a.save(tmp_path / "v.safetensors")
    assert p.name == "v.safetensors" and not (tmp_path / "v.safetensors.safetensors").exists()
    assert (tmp_path / "v.json").exists()
    torch.testing.assert_close(SteeringVector.load(tmp_path / "v").directions[LAYER], a.directions[LAYER])


def test_02_dot_in_a_sparse_vector_name(tmp_path):
    sae = random_sae()
    v1, v2 = _sparse(sae), _sparse(sae) * 3
    v1.save(tmp_path / "sas_tau0.1")
    v2.save(tmp_path / "sas_tau0.2")
    back = SparseVector.load(tmp_path / "sas_tau0.1", saes={LAYER: sae})
    torch.testing.assert_close(back.codes[LAYER], v1.codes[LAYER])
    assert (tmp_path / "sas_tau0.1.json").exists()


def test_02_cli_vectors_from_two_dotted_pair_files_do_not_overwrite(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_model", lambda args: tiny)
    rows = [{"question": p.question, "answer_matching_behavior": f"({p.matching})",
             "answer_not_matching_behavior": f"({p.not_matching})"} for p in PAIRS]
    for name in ("my.pairs.v1.jsonl", "my.pairs.v2.jsonl"):
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in rows))
        cli.main(["vectors", "--pairs", str(tmp_path / name), "--layers", "1", "--out", str(tmp_path / "vec")])
    made = sorted(p.name for p in (tmp_path / "vec").glob("*.safetensors"))
    assert made == ["caa_my.pairs.v1.safetensors", "caa_my.pairs.v2.safetensors"]


# -------------------------------------------------------------- 3. a sparse vector is tied to its SAE
def test_03_sae_at_another_layer_is_refused(tiny):
    sae5 = random_sae(layer=0)
    code = torch.zeros(64)
    code[3] = 1.0
    with pytest.raises(ValueError, match="layer"):
        SparseVector({2: code}, {2: sae5}, "tiny")  # an SAE reading blocks.0 cannot steer blocks.2


def test_03_saved_sae_identity_is_checked_on_load(tmp_path):
    sae = random_sae(seed=0)
    path = _sparse(sae).save(tmp_path / "sv")
    meta = json.loads((tmp_path / "sv.json").read_text())
    ident = meta["sae"][str(LAYER)]
    assert ident["hook"] == f"blocks.{LAYER}.hook_resid_post" and len(ident["sha256"]) == 64
    assert ident["sha256"] == S.sae_hash(sae)
    SparseVector.load(path, saes={LAYER: sae})  # the same SAE: fine
    other = random_sae(seed=1)  # same width and layer, other weights
    with pytest.raises(ValueError, match="sha256|weights"):
        SparseVector.load(path, saes={LAYER: other})
    with pytest.warns(UserWarning):
        v = SparseVector.load(path, saes={LAYER: other}, allow_sae_mismatch=True)
    assert v.saes[LAYER] is other


def test_03_saes_given_for_other_layers_are_not_silently_replaced(tmp_path):
    path = _sparse(random_sae()).save(tmp_path / "sv")
    with pytest.raises(ValueError, match=f"layer {LAYER}"):
        SparseVector.load(path, saes={0: random_sae(layer=0)})


@pytest.mark.parametrize("name", ["../../elsewhere/sae", "/tmp/some/folder", "gemma-scope-2-270m-pt-res/layer_9"])
def test_03_never_follows_a_path_or_hub_name_from_the_file(tmp_path, name, monkeypatch):
    path = _sparse(random_sae()).save(tmp_path / "sv")
    _edit_header(path, lambda m: (m["sae_names"].__setitem__(str(LAYER), name),
                                  m["sae"][str(LAYER)].__setitem__("name", name)))
    called = []
    monkeypatch.setattr(S, "load_sae", lambda *a, **k: called.append(a) or random_sae())
    with pytest.raises(ValueError, match="registry"):
        SparseVector.load(path)
    assert not called


# --------------------------------------------------------------------- 4. the hook field is checked
@pytest.mark.parametrize("hook", ["hook_embed", "blocks.{layer}.ln1.hook_scale", "{layer.__class__.__mro__}",
                                  "blocks.{layer:>50000000}.hook_resid_post"])
def test_04_unknown_hook_refused_on_construction_and_load(tmp_path, hook):
    with pytest.raises(ValueError, match="hook"):
        _vec(hook_point=hook)
    path = _vec().save(tmp_path / "v")
    _edit_header(path, lambda m: m.__setitem__("hook_point", hook))
    with pytest.raises(ValueError, match="hook"):
        SteeringVector.load(path)
    sae = random_sae()
    with pytest.raises(ValueError, match="hook"):
        SparseVector({LAYER: torch.zeros(64)}, {LAYER: sae}, "tiny", hook_point=hook)


def test_04_hook_names_are_never_formatted():
    v = _vec()
    assert v.hook_name(LAYER) == f"blocks.{LAYER}.hook_resid_post"
    v.hook_point = "{layer.__class__}"  # edited after construction
    with pytest.raises(ValueError, match="hook"):
        v.hook_name(LAYER)


# ------------------------------------------------------------------ 5. two conversions at once
@pytest.mark.slow
def test_05_two_processes_convert_the_model_at_once(tmp_path):
    """Two loads on an empty cache: both succeed, one conversion is kept, no temporary folder is left."""
    code = ("import sys, torch; torch.set_num_threads(1)\n"
            "from sas.load.models import converted_model_dir\n"
            "print(converted_model_dir('gemma-3-270m'))\n")
    env = {**os.environ, "SAS_CACHE": str(tmp_path), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "rebuilding" not in err
    assert outs[0][0].strip() == outs[1][0].strip() == str(tmp_path / "gemma-3-270m")
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))  # filelock keeps its file
    assert left == ["gemma-3-270m"]
    assert M._manifest_ok(tmp_path / "gemma-3-270m")


# ------------------------------------------------------------------ 6. non-finite multipliers
@pytest.mark.parametrize("mult", [float("nan"), float("inf"), -float("inf")])
def test_06_non_finite_multiplier_refused(tiny, mult):
    v = _vec()
    with pytest.raises(ValueError, match="finite"):
        with steer(tiny, v, mult):
            pass
    with pytest.raises(ValueError, match="finite"):
        steering_hooks(tiny, [v, v], [1.0, mult])
    with pytest.raises(ValueError, match="finite"):
        ab_score(tiny, PAIRS, v, mult)
    with pytest.raises(ValueError, match="finite"):
        with steer(tiny, _sparse(random_sae()), mult):
            pass
    assert hooks_left(tiny) == {}


def test_06_cli_refuses_non_finite_multipliers():
    for s in ("nan", "1,inf", "-Infinity"):
        with pytest.raises(Exception, match="finite"):
            cli._floats(s)


def test_06_vector_edited_in_place_is_checked_when_steering(tiny):
    v = _vec()
    v.directions[LAYER][5] = float("nan")
    with pytest.raises(ValueError, match="NaN|finite"):
        with steer(tiny, v, 1.0):
            pass
    sv = _sparse(random_sae())
    sv.codes[LAYER][3] = float("inf")
    with pytest.raises(ValueError, match="NaN|finite"):
        with steer(tiny, sv, 1.0):
            pass
    assert hooks_left(tiny) == {}


# ---------------------------------------------------------- 8. a string where a list is expected
def test_08_string_layers_refused(tiny):
    with pytest.raises((TypeError, ValueError), match="layers"):
        sas.caa_vector(tiny, PAIRS, layers="12", progress=False)
    with pytest.raises((TypeError, ValueError), match="layers"):
        steering_hooks(tiny, _vec(), 1.0, layers="1")


def test_08_string_texts_refused(tiny):
    with pytest.raises((TypeError, ValueError), match="list"):
        sas.contrastive_vector(tiny, "good", "evil", [1])
    with pytest.raises((TypeError, ValueError), match="list"):
        sas.contrastive_vector(tiny, ["good"], "e", [1])


def test_08_sas_from_texts_needs_the_same_number_of_texts(tiny):
    with pytest.raises(ValueError, match="as many"):
        sas.sas_vector_from_texts(tiny, random_sae(), ["good", "great"], ["bad"])
    with pytest.raises((TypeError, ValueError), match="list"):
        sas.sas_vector_from_texts(tiny, random_sae(), "good", "bad")


# ------------------------------------------------------------------- 9. steering and threads
def test_09_steering_is_per_thread(tiny):
    """A thread that does not steer sees the unsteered model while another thread is inside steer()."""
    v = _vec()
    clean = _resid_after(tiny, nullcontext)
    inside, leave, seen = threading.Event(), threading.Event(), {}

    def steered():
        with steer(tiny, v, 3.0):
            inside.set()
            leave.wait(30)
            seen["steered"] = _resid_after(tiny, nullcontext)

    t = threading.Thread(target=steered)
    t.start()
    assert inside.wait(30)
    seen["other"] = _resid_after(tiny, nullcontext)
    leave.set()
    t.join(30)
    torch.testing.assert_close(seen["other"], clean)  # the other thread was not steered
    assert not torch.allclose(seen["steered"], clean)
    assert hooks_left(tiny) == {}


def test_09_one_threads_exit_does_not_remove_anothers_hooks(tiny):
    v, w = _vec(seed=1), _vec(seed=2)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}
    clean = _resid_after(tiny, nullcontext)

    def a():
        with steer(tiny, v, 2.0):
            a_in.set()
            b_in.wait(30)
        a_out.set()

    def b():
        a_in.wait(30)
        with steer(tiny, w, 2.0):
            b_in.set()
            a_out.wait(30)  # A has left its block: B must still be steered
            seen["b"] = _resid_after(tiny, nullcontext)

    ts = [threading.Thread(target=a), threading.Thread(target=b)]
    [t.start() for t in ts]
    [t.join(30) for t in ts]
    added = seen["b"] - clean
    torch.testing.assert_close(added[0, -1], 2.0 * w.directions[LAYER], atol=1e-4, rtol=1e-4)
    assert hooks_left(tiny) == {}


# ----------------------------------------------------------------- 10. context length up front
def test_10_prompt_longer_than_the_context_is_refused(tiny):
    n_ctx = tiny.cfg.n_ctx
    long = [[2] + [651] * (n_ctx + 10)]
    with pytest.raises(ValueError, match=str(n_ctx)):
        generate_tokens(tiny, long, max_new_tokens=2)
    with pytest.raises(ValueError, match=str(n_ctx)):
        generate_tokens(tiny, [[2] + [651] * (n_ctx - 5)], max_new_tokens=20)  # prompt + new tokens too long
    tokens, mask, left_pad = pad_left(long, pad_id(tiny))
    with pytest.raises(ValueError, match=str(n_ctx)):
        run_resid(tiny, tokens, mask, left_pad)


# ------------------------------------------------------------ 11. manifest and a missing package
def test_11_manifest_must_list_every_file(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    files = {"config.json": {"size": 2, "sha256": M.sha256(folder / "config.json")}}  # weights not listed
    (folder / "sas_manifest.json").write_text(json.dumps({"model": "m", "files": files}))
    assert not M._manifest_ok(folder)
    files["model.safetensors"] = {"size": 10, "sha256": M.sha256(folder / "model.safetensors")}
    (folder / "sas_manifest.json").write_text(json.dumps({"model": "m", "files": files}))
    assert not M._manifest_ok(folder)  # still no tokenizer
    (folder / "tokenizer.json").write_text("{}")
    files["tokenizer.json"] = {"size": 2, "sha256": M.sha256(folder / "tokenizer.json")}
    (folder / "sas_manifest.json").write_text(json.dumps({"model": "m", "files": files}))
    assert M._manifest_ok(folder)


def test_11_missing_model_package_leaves_no_partial_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SAS_CACHE", str(tmp_path))
    fake = M.LocalModel("nopkg-1m", "nopkg/nopkg-1m", "sas_no_such_package_xyz", "pip install nothing", chat=False,
                        n_layers=1)
    monkeypatch.setitem(M.LOCAL_MODELS, "nopkg-1m", fake)
    with pytest.raises(ImportError, match="sas_no_such_package_xyz"):
        M.converted_model_dir("nopkg-1m")
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


# ---------------------------------------------------------------------------- 12. load_pairs
ROW = {"question": "Q?\n (A) yes\n (B) no", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom"])
def test_12_load_pairs_reads_bom_and_utf16(tmp_path, encoding):
    text = json.dumps({**ROW, "question": "Café? ü\n (A) yes\n (B) no"}, ensure_ascii=False) + "\n"
    p = tmp_path / "pairs.jsonl"
    if encoding.endswith("-bom"):
        codec = encoding[:-4]
        p.write_bytes(("\ufeff" + text).encode(codec))
    else:
        p.write_bytes(text.encode(encoding))
    assert load_pairs(p) == [ABPair("Café? ü\n (A) yes\n (B) no", "A", "B")]


def test_12_non_utf8_file_names_the_file(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(json.dumps({**ROW, "question": "Caf\u00e9?"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.jsonl.*UTF-8"):
        load_pairs(p)


def test_12_pretty_printed_json_object_and_objects(tmp_path):
    p = tmp_path / "one.json"
    p.write_text(json.dumps(ROW, indent=2))
    assert load_pairs(p) == [ABPair(ROW["question"], "A", "B")]
    p.write_text(json.dumps(ROW, indent=2) + "\n" + json.dumps(ROW, indent=2))  # a stream of pretty objects
    assert len(load_pairs(p)) == 2


@pytest.mark.parametrize("line", ["[1, 2]", "3", "\"text\"", "null", "true"])
def test_12_a_line_that_is_not_an_object(tmp_path, line):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(ROW) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2.*object"):
        load_pairs(p)


@pytest.mark.parametrize("question", [None, 3, "", ["q"]])
def test_12_question_must_be_text(tmp_path, question):
    p = tmp_path / "q.jsonl"
    p.write_text(json.dumps({**ROW, "question": question}))
    with pytest.raises(ValueError, match=r"q\.jsonl:1.*question"):
        load_pairs(p)


def test_12_a_json_list_of_non_objects(tmp_path):
    p = tmp_path / "l.json"
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"l\.json item 0.*object"):
        load_pairs(p)


# ---------------------------------------------------------------------------- 13. shapes
def test_13_vector_shapes_checked_at_construction():
    with pytest.raises(ValueError, match="width"):
        SteeringVector({1: torch.zeros(32), 2: torch.zeros(16)}, "tiny", "caa")
    with pytest.raises(ValueError, match="dimension|shape"):
        SteeringVector({1: torch.zeros(2, 3, 32)}, "tiny", "caa")
    with pytest.raises(ValueError, match="front"):
        SteeringVector({1: torch.zeros(32)}, "tiny", "caa", positions="front")
    with pytest.raises(ValueError, match="at least one layer|empty"):
        SteeringVector({}, "tiny", "caa")
    with pytest.raises(ValueError, match="dimension|shape"):
        SparseVector({LAYER: torch.zeros(2, 64)}, {LAYER: random_sae()}, "tiny")
    with pytest.raises(ValueError, match="at least one layer|empty"):
        SparseVector({}, {}, "tiny")


def test_13_front_positions_need_a_position_aligned_vector(tiny):
    with pytest.raises(ValueError, match="front"):
        steering_hooks(tiny, _vec(), 1.0, positions="front")


def test_13_wrong_width_refused_before_the_forward_pass(tiny):
    v = SteeringVector({LAYER: torch.zeros(16)}, "tiny", "caa")
    with pytest.raises(ValueError, match="width"):
        steering_hooks(tiny, v, 1.0)


# ------------------------------------------------------------------------- 14. sampling
@pytest.mark.parametrize("kw,match", [({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"),
                                      ({"temperature": float("nan")}, "temperature"), ({"top_p": 0.0}, "top_p"),
                                      ({"top_p": 1.5}, "top_p"), ({"top_k": 0}, "top_k"),
                                      ({"max_new_tokens": -5}, "max_new_tokens")])
def test_14_sampling_arguments_checked(tiny, kw, match):
    kw = {"do_sample": True, "max_new_tokens": 2, **kw}
    with pytest.raises(ValueError, match=match):
        generate(tiny, ["Hello"], **kw)


def test_14_valid_sampling_runs(tiny):
    out = generate(tiny, ["Hello"], max_new_tokens=2, do_sample=True, temperature=0.5, top_p=0.9, top_k=5, seed=1)
    assert len(out) == 1


# --------------------------------------------------------------------- 15. unknown model name
def test_15_unknown_model_says_what_is_offline():
    with pytest.raises(ValueError) as e:
        M.load_model("gemma-3-270")
    msg = str(e.value)
    assert "gemma-3-270m" in msg and "smollm2-135m-instruct" in msg and len(msg) < 1000


# ------------------------------------------------------------------------------- 16. the CLI
def test_16_cli_checks_layers_before_loading_the_model(monkeypatch, capsys):
    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as e:
        cli.main(["sweep", "--behavior", "sycophancy", "--layers", "40"])
    assert "40" in str(e.value.code) and "0..17" in str(e.value.code)


def test_16_cli_feature_out_of_range_is_a_clear_error(tiny, tmp_path, monkeypatch):
    folder = tmp_path / "sae"
    random_sae().save_model(str(folder))
    monkeypatch.setattr(cli, "_model", lambda args: tiny)
    with pytest.raises(SystemExit) as e:
        cli.main(["inspect", "--sae", str(folder), "--features", "999999", "--n-texts", "2"])
    assert "999999" in str(e.value.code) and "sas inspect" in str(e.value.code)


def test_16_cli_sparse_vector_with_an_sae_of_another_layer(tiny, tmp_path, monkeypatch):
    path = _sparse(random_sae(layer=1)).save(tmp_path / "sv")
    folder = tmp_path / "sae0"
    random_sae(layer=0).save_model(str(folder))
    monkeypatch.setattr(cli, "_model", lambda args: tiny)
    with pytest.raises(SystemExit) as e:
        cli.main(["inspect", "--vector", str(path), "--sae", str(folder), "--n-texts", "2"])
    assert "layer 1" in str(e.value.code)


# -------------------------------------------------------------------------- 17. SAE folders
def test_17_truncated_sae_weights_name_the_path(tmp_path):
    folder = tmp_path / "sae"
    random_sae().save_model(str(folder))
    w = folder / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    with pytest.raises(ValueError, match=str(folder)):
        S.load_sae(folder)


def test_17_cfg_disagreeing_with_weights_names_the_path(tmp_path):
    folder = tmp_path / "sae"
    random_sae().save_model(str(folder))
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["d_in"] = 48
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=str(folder)):
        S.load_sae(folder)


@pytest.mark.parametrize("spec", ["../no/such/sae", "./missing", "/no/such/folder/sae"])
def test_17_missing_local_path_is_not_a_hub_release(spec):
    with pytest.raises(FileNotFoundError, match="no SAE folder"):
        S.load_sae(spec)


# -------------------------------------------------------------------- 18. names from prompts
def test_18_actadd_prompt_cannot_escape_the_output_folder(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_model", lambda args: tiny)
    out = tmp_path / "a" / "b" / "vec"
    cli.main(["vectors", "--positive", "../../../escape", "--negative", "Hate", "--layers", "1", "--out", str(out)])
    made = [p for p in tmp_path.rglob("*.safetensors")]
    assert len(made) == 1 and made[0].parent == out, made


# ------------------------------------------------------------------ 19. letters other than A/B
def test_19_p_a_is_not_made_up_for_other_letters(tiny):
    pairs = [ABPair("Pick one\n (C) x\n (D) y", "C", "D"), ABPair("Pick\n (C) x\n (D) y", "D", "C")]
    r = ABScorer(tiny, pairs).score()
    assert r["p_a"] is None and r["n"] == 2
    mixed = ABScorer(tiny, pairs + PAIRS[:2]).score()
    assert mixed["p_a"] is not None and mixed["n_ab"] == 2


# ------------------------------------------- 21. tests read no data from outside the repository
def test_21_no_test_reads_the_shared_folder():
    """No test and no test helper refers to the shared data folder outside this repository."""
    word = "sha" + "red"  # spelled apart so that this file does not match itself
    # the folder as a path (joined with /, or followed by /, or ../ before it); a settings key of that name is not one
    needles = [f'/ "{word}"', f"/ '{word}'", f'"{word}/', f"'{word}/", f"../{word}"]
    for f in sorted((ROOT / "tests").glob("*.py")):
        text = f.read_text()
        assert not [n for n in needles if n in text], f.name


def test_21_scripts_need_the_corpus_as_an_argument(tmp_path, capsys):
    import importlib.util

    for name in ("evaluate_sae", "train_sae"):
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        flag = "--heldout" if name == "evaluate_sae" else "--corpus"
        argv = ["--sae", "x", flag, str(tmp_path / "missing")] if name == "evaluate_sae" else \
            [flag, str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
        with pytest.raises((SystemExit, FileNotFoundError)) as e:
            mod.main(argv)
        assert "missing" in str(e.value) + capsys.readouterr().err


def test_write_text_is_atomic_and_makes_folders(tmp_path):
    """Reports, cards and settings go through one writer: a failed write leaves the old file and no temporary."""
    from sas.files import write_atomic, write_text

    p = write_text(tmp_path / "a" / "report.md", "one")
    assert p.read_text() == "one"

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomic(p, fail)
    assert p.read_text() == "one" and [x.name for x in p.parent.iterdir()] == ["report.md"]


def test_save_figure_writes_the_format_its_suffix_names(tmp_path):
    from sas.reports.plots import figure, save_figure

    fig, ax = figure()
    ax[0, 0].plot([0, 1])
    png, svg = save_figure(fig, tmp_path / "f.png"), save_figure(fig, tmp_path / "f.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in svg.read_bytes()[:1000]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.png", "f.svg"]
