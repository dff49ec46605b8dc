"""Where a model runs and in what precision: ``device="auto"`` and dtype names, checked before any weight loads.

    resolve_device("auto")            # "cuda" when torch sees a GPU, else "cpu"
    resolve_dtype("bfloat16", "cpu")  # torch.bfloat16
    block_device(model, 9)            # the device that holds block 9 (models split with n_devices > 1)

SAEs, steering vectors and every tensor sas makes for a forward pass follow the model: its device (the
device of the block they act on) and, for SAEs, its dtype. Vectors are computed and saved in float32.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device | None = "auto") -> str:
    """``"auto"``/None -> ``"cuda"`` if torch sees a GPU, else ``"cpu"``; any other device is checked to exist.

    Raises ``ValueError`` naming the fix for ``"cuda"`` without a usable GPU (or a GPU index out of range).
    """
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        d = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from e
    if d.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ValueError(f"device {str(device)!r} asked for, but torch {torch.__version__} ({build}) sees no GPU: "
                             "use device='cpu' (or 'auto', which picks the GPU when there is one), or install a "
                             "CUDA build of torch on a machine with an NVIDIA driver")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} asked for, but only {torch.cuda.device_count()} GPU(s) are "
                             f"visible (cuda:0..cuda:{torch.cuda.device_count() - 1}); check CUDA_VISIBLE_DEVICES")
    elif d.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' asked for, but this torch has no usable Metal backend: use 'cpu' or 'auto'")
    return str(d)


def resolve_dtype(dtype: str | torch.dtype, device: str = "cpu") -> torch.dtype:
    """A torch dtype from a name (``float32``, ``bfloat16``, ``float16``) or a dtype, checked against ``device``.

    Raises ``ValueError`` for an unknown name, ``bfloat16`` on a GPU without bfloat16 arithmetic (before
    Ampere), and ``float16`` on the CPU (emulated: use ``bfloat16`` there).
    """
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise ValueError(f"unsupported dtype {dtype}: choose one of {', '.join(DTYPES)}")
    kind = torch.device(device).type
    if dtype == torch.bfloat16 and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{torch.cuda.get_device_name()} has no bfloat16 arithmetic: use dtype='float16' (or "
                         "'float32') on this GPU")
    if dtype == torch.float16 and kind == "cpu":
        raise ValueError("float16 is not a CPU dtype here (emulated and slow): use dtype='bfloat16' (about 2x "
                         "faster than float32 on CPUs with AVX-512 BF16) or 'float32'")
    if dtype == torch.bfloat16 and kind == "cpu" and cpu_flags() and not cpu_flags() & BF16_FLAGS:
        warnings.warn("this CPU has no bfloat16 instructions (no avx512_bf16 or amx_bf16 in /proc/cpuinfo), so "
                      "bfloat16 matrix products are emulated: on an AVX2 CPU (AMD EPYC, 2026-12-02) gemma-3-270m's "
                      "forward pass took 3.4x the CPU time of float32's, a bare 128x640x2048 product 150x. Use "
                      "dtype='float32' here", stacklevel=2)
    return dtype


BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none, e.g. macOS: nothing is assumed)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


def native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 instructions (``False`` where its flags cannot be read): the dtype to pick for
    speed is bfloat16 when it does, float32 when it does not (the CPU then emulates bfloat16, 3.4x slower)."""
    return bool(cpu_flags() & BF16_FLAGS)


def check_n_devices(n_devices: int, device: str) -> None:
    """Raise ``ValueError`` unless ``n_devices`` GPUs are there to split a model over (1 always works)."""
    if n_devices < 1:
        raise ValueError(f"n_devices must be at least 1, not {n_devices}")
    if n_devices > 1:
        if torch.device(device).type != "cuda":
            raise ValueError(f"n_devices={n_devices} splits the model's blocks over GPUs, but the device is "
                             f"{device!r}: use device='cuda' (or 'auto' on a GPU machine), or n_devices=1")
        if n_devices > torch.cuda.device_count():
            raise ValueError(f"n_devices={n_devices} asked for, but only {torch.cuda.device_count()} GPU(s) are "
                             "visible; lower n_devices or check CUDA_VISIBLE_DEVICES")


def block_device(model, layer: int | None = None) -> torch.device:
    """The device of block ``layer`` of a HookedTransformer (its first device if ``layer`` is None): where
    activations at ``blocks.{layer}.hook_*`` live, and so where an SAE or a vector for that layer belongs."""
    # the weights' own device, not cfg.device: that is where TransformerLens actually put them
    return model.W_E.device if layer is None else next(model.blocks[layer].parameters()).device


def model_dtype(model) -> torch.dtype:
    """The dtype a HookedTransformer computes in."""
    return model.cfg.dtype
