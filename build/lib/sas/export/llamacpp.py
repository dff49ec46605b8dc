"""Apply a GGUF control vector to a ``llama_cpp.Llama`` (llama-cpp-python) model.

llama-cpp-python's ``Llama`` class has no control-vector option (0.3.36): only the raw
``llama_cpp.llama_set_adapter_cvec(ctx, data, len, n_embd, il_start, il_end)``, which takes the flat buffer
that llama.cpp's own ``common_control_vector_load`` (common/common.cpp) builds from the files given to
``--control-vector-scaled``. :func:`control_vector_buffer` builds that buffer the same way from the file (read
with the ``gguf`` package), and :func:`set_control_vector` hands it to llama.cpp.

    llm = llama_cpp.Llama("gemma-3-270m-Q4_K_M.gguf")
    set_control_vector(llm, "sentiment.gguf", scale=2.0)       # = llama-cli --control-vector-scaled sentiment.gguf:2
    ...
    set_control_vector(llm, None)                              # off again
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from .gguf import read_directions


def control_vector_buffer(files, scales=1.0) -> tuple[np.ndarray, int]:
    """The flat float32 buffer llama.cpp steers with, and its ``n_embd``.

    ``files``: one path or a list; ``scales``: one number or one per file (``--control-vector-scaled F:S``).
    Row N-1 (``buffer[(N-1)*n_embd : N*n_embd]``) is the sum over files of ``scale * direction.N``: llama.cpp has no
    row for layer 0 (common/common.cpp:1954 ``layer 1 at [0]``; src/llama-adapter.cpp:129 row il-1 steers layer il).
    """
    files = [files] if isinstance(files, (str, Path)) else list(files)
    scales = [float(scales)] * len(files) if isinstance(scales, (int, float)) else [float(s) for s in scales]
    if len(scales) != len(files):
        raise ValueError(f"got {len(files)} control vector files but {len(scales)} scales")
    rows: dict[int, np.ndarray] = {}
    n_embd = None
    for f, s in zip(files, scales):
        if not np.isfinite(s):
            raise ValueError(f"the scale of {f} must be a finite number, not {s}")
        dirs, _ = read_directions(f)
        width = next(iter(dirs.values())).shape[0]
        if n_embd is not None and width != n_embd:
            raise ValueError(f"{f} has width {width}, the other control vectors {n_embd}")
        n_embd = width
        for n, d in dirs.items():
            rows[n] = rows.get(n, 0.0) + s * d
    buf = np.zeros((max(rows), n_embd), dtype=np.float32)
    for n, d in rows.items():
        buf[n - 1] = d
    return buf.reshape(-1), n_embd


def set_control_vector(llm, files, scales=1.0, layer_range: tuple[int, int] | None = None) -> None:
    """Steer ``llm`` (a ``llama_cpp.Llama``) with control vector ``files`` x ``scales``; ``files=None`` turns it off.

    ``layer_range``: ``(start, end)``, inclusive, llama.cpp layer numbers (= sas layers at ``hook_resid_post``), as
    ``--control-vector-layer-range START END``; default ``(1, n_layer)``, llama.cpp's default (common/common.cpp:1368).
    The model's state is reset, because keys and values cached before the change were computed without it.
    """
    import llama_cpp

    n_layer = llama_cpp.llama_model_n_layer(llm.model)
    if files is None:
        rc = llama_cpp.llama_set_adapter_cvec(llm.ctx, None, 0, llama_cpp.llama_model_n_embd(llm.model), -1, -1)
    else:
        buf, n_embd = control_vector_buffer(files, scales)
        if n_embd != llama_cpp.llama_model_n_embd(llm.model):
            raise ValueError(f"the control vector has width {n_embd} but the model has n_embd "
                             f"{llama_cpp.llama_model_n_embd(llm.model)}: it was made for another model")
        top = buf.shape[0] // n_embd  # the highest layer with a direction
        if top >= n_layer:
            # llama-adapter.cpp:126 fills layers il < n_layer only: a direction beyond them would be dropped silently
            raise ValueError(f"the control vector has a direction for layer {top} but the model has layers "
                             f"0..{n_layer - 1}")
        # llama_adapter_cvec::apply writes only the rows the buffer has (llama-adapter.cpp:130): rows of a previous,
        # longer vector would stay behind. A buffer with a row for every layer 1..n_layer-1 overwrites them all.
        buf = np.concatenate([buf, np.zeros((n_layer - 1) * n_embd - buf.size, dtype=np.float32)])
        start, end = layer_range or (1, n_layer)
        if not 1 <= start <= end:
            raise ValueError(f"layer_range must be (start, end) with 1 <= start <= end, not {layer_range}")
        data = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))  # llama.cpp copies it (ggml_backend_tensor_set)
        rc = llama_cpp.llama_set_adapter_cvec(llm.ctx, data, buf.size, n_embd, int(start), int(end))
    if rc != 0:
        raise RuntimeError(f"llama_set_adapter_cvec failed with code {rc}")
    llm.reset()
