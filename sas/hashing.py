"""Every hash sas computes, in one place: of files, tensors, JSON-able settings and data, and text.

A hash ties a result to what made it (a vector to its SAE's weights and its data, a cache file to its settings);
the functions here are the only users of :mod:`hashlib` in the package, so two places never hash one thing two
ways.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def sha256(path) -> str:
    """The sha256 hex digest of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def tensor_hash(tensors) -> str:
    """sha256 of tensors' contents: the name, dtype, shape and bytes of each, in name order for a mapping
    ``{name: tensor}`` (a state dict), in the given order for a sequence. The one content hash of tensors in sas."""
    import torch

    items = sorted(tensors.items()) if hasattr(tensors, "items") else enumerate(tensors)
    h = hashlib.sha256()
    for name, t in items:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def json_hash(obj, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``obj`` as JSON (keys sorted; what JSON cannot hold as its
    ``str``): settings, keys and data sets."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def text_hash(text: str, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def text_fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text``: the first 8 bytes of its sha256 over 2**64 (deterministic splits)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2 ** 64


def files_sample_hash(head: bytes, files: list[Path], sample: int = 1 << 20) -> str:
    """A cheap key for large files: ``head``, then each file's name, size and first and last ``sample`` bytes."""
    h = hashlib.sha256(head)
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}\n".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(sample))
            fh.seek(max(0, size - sample))
            h.update(fh.read(sample))
    return h.hexdigest()[:16]


def held_out_fifth(text: str) -> bool:
    """Whether ``text`` is in the fifth of the sentiment prompts that SAE training never sees: its md5 is 0 mod 5
    (the rule every shipped SAE was trained with; training reads the other 80%)."""
    return int(hashlib.md5(text.encode()).hexdigest(), 16) % 5 == 0
