"""Steering vectors as GGUF control vectors, the file format llama.cpp loads with ``--control-vector``.

The file is what repeng's ``ControlVector.export_gguf`` writes (repeng/extract.py): architecture
``controlvector``, keys ``controlvector.model_hint`` and ``controlvector.layer_count``, and one F32 1-D
tensor ``direction.N`` per steered layer. sas adds its own keys under ``sas.`` (llama.cpp ignores them)
so that :func:`load_gguf` gives back the vector that was written, bit for bit.

Layer numbering. llama.cpp adds ``direction.N`` to the output of its decoder layer N, counted from 0
(line numbers in llama.cpp as vendored by llama-cpp-python 0.3.36, ``vendor/llama.cpp/``):
- common/common.cpp:1954, ``common_control_vector_load_one``: ``direction.N`` goes to row N-1 of the flat
  buffer (``float * dst = result.data.data() + result.n_embd * (layer_idx - 1);  // layer 1 at [0]``), and
  common.cpp:1925 refuses ``direction.0`` (``invalid (zero) direction tensor layer index``);
- src/llama-adapter.cpp:129, ``llama_adapter_cvec::apply``: row il-1 of that buffer fills ``tensors[il]``
  (``const size_t off = n_embd * (il - 1); // buffer doesn't have data for layer 0, since it's never present``),
  and llama-adapter.cpp:17 uses ``tensors[il]`` only for ``layer_start <= il <= layer_end``;
- src/models/gemma3.cpp:192 (as every architecture): ``cur = build_cvec(cur, il);`` right after the FFN
  residual add of layer ``il``, i.e. on the layer's output (``l_out``).
So ``direction.N`` is TransformerLens's ``blocks.N.hook_resid_post``, the hook sas steers: the numbers are the
same, and a vector at layer 0 cannot be a llama.cpp control vector. repeng agrees: its ControlModule adds
``directions[N]`` to the output of ``model.layers[N]`` (repeng/control.py, ``ControlModule.forward``), and
its ``export_gguf`` writes ``direction.{N}`` with that N. ``blocks.N.hook_resid_pre`` is the output of
layer N-1, so such a vector is written as ``direction.N-1``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..files import parse_json, write_atomic
from ..hooks import RESID_HOOK as RESID_POST
from ..steering.kinds import Vector
from ..steering.vector import SteeringVector

ARCH = "controlvector"
FORMAT = 1  # sas.format: bump when the sas.* keys change meaning
RESID_PRE = "blocks.{layer}.hook_resid_pre"
# llama.cpp's layer N is the output of block N: resid_post of block N, or resid_pre of block N+1
_LLAMA_OFFSET = {RESID_POST: 0, RESID_PRE: -1}


def llama_layer(vector: SteeringVector, layer: int) -> int:
    """The llama.cpp layer index (``direction.N``, ``--control-vector-layer-range``) of ``vector``'s ``layer``."""
    if vector.hook_point not in _LLAMA_OFFSET:
        raise ValueError(f"llama.cpp adds control vectors to the output of a layer; a vector at {vector.hook_point!r} "
                         f"has no llama.cpp equivalent (sas exports {RESID_POST} and {RESID_PRE})")
    return layer + _LLAMA_OFFSET[vector.hook_point]


def control_vector(vector, multiplier: float = 1.0, layers=None, sum_positions: bool = False) -> SteeringVector:
    """The dense vector that a GGUF file of ``vector`` holds: what :func:`save_gguf` writes and :func:`load_gguf`
    returns.

    ``vector``: a :class:`SteeringVector` or a ``SparseVector`` (exported as its dense direction
    ``W_dec^T v``, method ``sas_dense``: llama.cpp can only add a vector, and the SAS edit
    ``decode(sigma(encode(a) + lambda v)) - decode(encode(a))`` is not linear in ``a``). ``multiplier`` is
    baked into the directions; ``layers`` keeps a subset. A position-aligned ActAdd vector (``[n_pos, d_model]``
    rows, positions ``front``) is refused, because llama.cpp adds the same vector at every position; with
    ``sum_positions=True`` its rows are summed into one direction applied at every position, which is what sas
    itself adds when such a vector is used with positions ``all``.
    """
    if getattr(vector, "edit", "add") == "clamp":
        raise ValueError("a clamp vector sets its features to values that depend on each token's code: it is not a "
                         "constant residual vector, and a GGUF control vector can only add one. Export an 'add' "
                         "vector (e.g. sas_diff or sas_os) instead")
    if not isinstance(vector, Vector):
        raise TypeError(f"expected a SteeringVector or a SparseVector, got {type(vector).__name__}")
    dense = vector.to_dense()
    if dense is not vector:  # a sparse vector's dense direction W_dec^T v; its settings name the SAEs
        dense = replace(dense, settings={**dense.settings, "gguf_from": vector.kind})
    vector = dense
    if not vector.directions:
        raise ValueError("the vector has no layers; there is nothing to export")
    if layers is not None:
        vector = vector.only(layers)
    multiplier = float(multiplier)
    if not np.isfinite(multiplier):
        raise ValueError(f"the multiplier must be a finite number, not {multiplier}")
    dirs = {}
    for layer, d in sorted(vector.directions.items()):
        n = llama_layer(vector, layer)
        if n < 1:
            raise ValueError(f"layer {layer} ({vector.hook_name(layer)}) cannot be a llama.cpp control vector: "
                             "llama.cpp has none for the output of layer 0 (src/llama-adapter.cpp: \"there's never "
                             "a tensor for layer 0\"); export the other layers with layers=[...] / --layers")
        d = d.detach().float().cpu()
        if d.ndim == 2:
            if not sum_positions:
                raise ValueError(f"the {vector.method} vector is position-aligned ({d.shape[0]} rows at layer {layer}, "
                                 "one per prompt token): llama.cpp adds one vector at every position, so it cannot "
                                 "hold this edit. Pass sum_positions=True (sas export --sum-positions) to export "
                                 "the summed direction, which sas applies with positions='all'")
            d = d.sum(0)
        if d.ndim != 1:
            raise ValueError(f"the direction at layer {layer} has shape {tuple(d.shape)}; expected [d_model]")
        dirs[layer] = (d * multiplier).contiguous() if multiplier != 1.0 else d.contiguous()
        if not torch.isfinite(dirs[layer]).all():  # the vector was finite: the product overflowed float32
            raise ValueError(f"the multiplier {multiplier:g} overflows float32 at layer {layer} (its largest entry "
                             f"is {d.abs().max().item():.3g}); a control vector holds float32: use a multiplier "
                             f"below {np.finfo(np.float32).max / max(d.abs().max().item(), 1e-30):.3g}")
    settings = dict(vector.settings)
    positions = vector.positions
    if any(d.ndim == 2 for d in vector.directions.values()):
        settings["gguf_summed_positions"] = vector.positions
        positions = "all"
    if multiplier != 1.0:
        settings["gguf_multiplier"] = multiplier
    # as the file will hold them: JSON (integer keys become strings), so that load_gguf gives back this vector
    settings = json.loads(json.dumps(settings))
    return replace(vector, directions=dirs, positions=positions, settings=settings)


def save_gguf(vector, path: str | Path, multiplier: float = 1.0, layers=None, sum_positions: bool = False) -> Path:
    """Write ``vector`` as a llama.cpp control vector to ``path`` (``.gguf``) atomically; return the path.

    See :func:`control_vector` for ``multiplier``, ``layers``, ``sum_positions`` and what a sparse vector
    becomes. One F32 ``direction.N`` per layer with llama.cpp's numbering (the module docstring); the sas
    metadata goes in ``sas.meta`` (JSON).
    """
    vec = control_vector(vector, multiplier, layers, sum_positions)
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the control vector's file name, e.g. {path / 'vector.gguf'}")
    if path.suffix != ".gguf":
        path = path.with_name(path.name + ".gguf")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: _write_gguf(vec, tmp, path))


def _write_gguf(vec: SteeringVector, path: Path, final: Path) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), ARCH)
    try:
        writer.add_string(f"{ARCH}.model_hint", vec.model)
        writer.add_uint32(f"{ARCH}.layer_count", len(vec.directions))
        writer.add_uint32("sas.format", FORMAT)
        writer.add_string("sas.source", vec.settings.get("gguf_from", "dense"))
        writer.add_string("sas.meta", json.dumps(vec.meta()))
        for layer, d in vec.directions.items():
            writer.add_tensor(f"direction.{llama_layer(vec, layer)}", d.numpy().astype(np.float32, copy=False))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()  # may raise too on a full disk (the flush); write_atomic then removes the file
    # numpy's tofile, which the writer uses for tensors, can lose a failed write (a full disk) without an error
    try:
        back, _ = read_directions(path)
        same = sorted(back) == sorted(llama_layer(vec, x) for x in vec.directions) and all(
            np.array_equal(back[llama_layer(vec, x)], d.numpy()) for x, d in vec.directions.items())
    except ValueError:
        same = False
    if not same:
        raise OSError(f"writing {final} failed: the file written does not read back (is the disk full?)")


def _field(reader, key: str):
    f = reader.get_field(key)
    return None if f is None else f.contents()


def read_directions(path: str | Path) -> tuple[dict[int, np.ndarray], dict]:
    """The ``direction.N`` tensors of a control-vector GGUF as ``{N: float32 [n_embd]}`` (llama.cpp numbering),
    and its metadata keys ``{key: value}``; checks what llama.cpp checks (F32, 1-D, same width, N >= 1)
    and that the values are finite."""
    import gguf

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no control vector at {path}; write one with sas export --gguf")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # the gguf package raises ValueError/struct errors on a file that is not GGUF
        raise ValueError(f"{path} is not a GGUF file ({e}); write a control vector with sas export --gguf") from e
    arch = _field(reader, "general.architecture")
    if arch != ARCH:
        raise ValueError(f"{path} is a GGUF file with architecture {arch!r}, not a control vector "
                         f"({ARCH!r}): did you pass the model instead of the vector?")
    keys = {k: _field(reader, k) for k in reader.fields if not k.startswith("GGUF.")}
    dirs: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        prefix, _, idx = t.name.partition(".")
        if prefix != "direction" or not idx.isdigit():
            raise ValueError(f"{path}: tensor {t.name!r} is not a direction.N tensor (N a layer number)")
        n = int(idx)
        if n == 0:
            raise ValueError(f"{path}: direction.0 is not a layer llama.cpp can steer (it has none for the output "
                             "of layer 0); layers start at 1")
        if t.tensor_type != gguf.GGMLQuantizationType.F32 or len(t.shape) != 1:
            raise ValueError(f"{path}: {t.name} must be a 1-D F32 tensor, not {t.tensor_type.name} of shape "
                             f"{list(reversed(t.shape.tolist()))}")  # the reader lists GGML's order, innermost first
        d = np.array(t.data, dtype=np.float32)  # a copy: the reader's memory map closes with it
        if dirs and d.shape != next(iter(dirs.values())).shape:
            raise ValueError(f"{path}: {t.name} has width {d.shape[0]}, the other directions "
                             f"{next(iter(dirs.values())).shape[0]}")
        if not np.isfinite(d).all():
            raise ValueError(f"{path}: {t.name} has NaN or inf entries; re-export the vector")
        if n in dirs:
            raise ValueError(f"{path}: two tensors named {t.name}")
        dirs[n] = d
    if not dirs:
        raise ValueError(f"{path} has no direction.N tensors; there is nothing to steer with")
    return dirs, keys


def load_gguf(path: str | Path) -> SteeringVector:
    """Read a control-vector GGUF into a :class:`SteeringVector`.

    A file written by :func:`save_gguf` gives back :func:`control_vector` of the vector that was saved, exactly
    (float32 directions, every field). Another control vector (repeng, llama.cpp's cvector-generator) becomes
    a vector at ``blocks.N.hook_resid_post`` for each ``direction.N``, method ``gguf``, positions ``all`` (what
    llama.cpp does with it), model from ``controlvector.model_hint``.
    """
    raw, keys = read_directions(path)
    meta = keys.get("sas.meta")
    if meta is None:
        return SteeringVector({n: torch.from_numpy(d) for n, d in sorted(raw.items())},
                              model=str(keys.get(f"{ARCH}.model_hint") or ""), method="gguf", positions="all",
                              settings={"gguf_file": str(path)})
    meta = parse_json(meta, f"{path}: sas.meta") if isinstance(meta, str) else meta
    if not isinstance(meta, dict) or not {"layers", "model", "method", "behavior", "positions", "data_hash",
                                          "settings"} <= set(meta):
        raise ValueError(f"{path}: sas.meta is not the sas metadata of a vector (a JSON object with layers, model, "
                         "method, ...); re-export the vector with sas export, or remove the key to read the file as "
                         "a plain control vector")
    if keys.get("sas.format") != FORMAT:
        raise ValueError(f"{path} was written by another version of sas (sas.format {keys.get('sas.format')}, "
                         f"this one reads {FORMAT}); re-export it")
    hook = meta.get("hook_point", meta.get("hook"))
    if hook not in _LLAMA_OFFSET:
        raise ValueError(f"{path} names the hook {hook!r}; sas exports only {RESID_POST} and {RESID_PRE}")
    dirs = {n - _LLAMA_OFFSET[hook]: torch.from_numpy(d) for n, d in sorted(raw.items())}
    if sorted(dirs) != sorted(meta["layers"]):
        raise ValueError(f"{path}: its direction tensors are for layers {sorted(dirs)} but its sas metadata says "
                         f"{meta['layers']}; the file was edited, re-export it")
    keep = {k: meta[k] for k in ("model", "method", "behavior", "positions", "data_hash", "settings")}
    return SteeringVector(directions=dirs, hook_point=hook, **keep)
