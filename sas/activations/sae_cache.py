"""Per-SAE statistics cached on disk, tied to the exact SAE weights (sha256) they were computed from.

Output scores, activation statistics, the dashboard's feature cache and effect maps are expensive to compute (minutes) and cheap to
store. Each is one safetensors file ``<kind>-<settings hash>.safetensors`` whose header records the SAE's
weights sha256 and the settings; a file made from other weights or other settings is never used.

Where: a shipped copy beside a registry SAE (``saes/<name>/sas_cache/``) is read first; files are written
beside a local SAE folder (``<folder>/sas_cache/``) when it is writable, else under
``$SAS_CACHE/feature_cache/<name>/`` (the repository's ``saes/`` stays read-only).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..files import write_atomic
from ..hashing import json_hash
from ..load.saes import SAE_DIR, registry, sae_hash

SHIPPED = "sas_cache"


def sae_cache_dir(sae, sub: str = "feature_cache") -> Path:
    """Where files computed for ``sae`` are written: beside a writable local SAE folder (``<folder>/<sub>``),
    else ``$SAS_CACHE/feature_cache/<name>`` (registry and hub SAEs)."""
    from ..load.models import cache_dir

    name = str(getattr(sae, "sas_name", "") or "sae")
    folder = Path(name)
    if name not in registry() and folder.is_dir() and os.access(folder, os.W_OK):
        return folder / sub
    return cache_dir() / "feature_cache" / "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _places(sae) -> list[Path]:
    name = str(getattr(sae, "sas_name", "") or "")
    places = []
    if name in registry():
        places.append(SAE_DIR / registry()[name].get("folder", name) / SHIPPED)
    places.append(sae_cache_dir(sae, SHIPPED))
    return places


def settings_key(kind: str, settings: dict) -> str:
    return f"{kind}-" + json_hash(settings)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` and the JSON ``meta`` to the safetensors file ``path`` atomically."""
    return write_atomic(path, lambda tmp: save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                                                    str(tmp), metadata={"sas": json.dumps(meta, default=str)}))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, meta)`` of a file :func:`save_tensors` wrote."""
    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("sas", "{}"))
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: its metadata is not a JSON object")
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def read_cached(sae, kind: str, settings: dict, folder: str | Path | None = None,
                ) -> tuple[dict[str, torch.Tensor], dict] | None:
    """``(tensors, meta)`` of the cached ``kind`` for ``sae`` and ``settings`` (from ``folder`` if given), or None if
    there is none made from these weights; ``meta["path"]`` is the file read."""
    key, sha = settings_key(kind, settings), sae_hash(sae)
    stale = []  # copies made from other weights (e.g. a shipped float32 file read by a bfloat16 SAE)
    for place in [Path(folder)] if folder else _places(sae):
        path = place / f"{key}.safetensors"
        if not path.exists():
            continue
        try:
            tensors, meta = load_tensors(path)
        except Exception as e:  # a truncated or foreign file: recompute rather than use wrong numbers
            warnings.warn(f"{path} is unreadable ({e}); recomputing it")
            continue
        if meta.get("sae_sha256") == sha and meta.get("settings") == json.loads(json.dumps(settings, default=str)):
            return tensors, {**meta, "path": str(path)}
        stale.append(str(path))
    if stale:  # said only when no place has a valid copy: a later place's copy is used silently
        warnings.warn(f"{', '.join(stale)} was computed from other SAE weights (this SAE's sha256 {sha[:12]}...) "
                      "or settings; recomputing it")
    return None


def write_cached(sae, kind: str, settings: dict, tensors: dict[str, torch.Tensor], meta: dict,
                 folder: str | Path | None = None) -> tuple[Path, dict]:
    """Write ``tensors`` atomically to the cache of ``sae`` (see the module docstring; ``folder`` instead if given);
    returns the path and the metadata written (``meta`` with the kind, settings and the SAE's sha256)."""
    path = Path(folder or sae_cache_dir(sae, SHIPPED)) / f"{settings_key(kind, settings)}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "kind": kind, "settings": settings, "sae_sha256": sae_hash(sae),
            "sae_name": str(getattr(sae, "sas_name", "")), "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    save_tensors(path, tensors, meta)
    return path, meta


def cached(sae, kind: str, settings: dict, build: Callable[[], tuple[dict, dict]], rebuild: bool = False,
           what: str = "", folder: str | Path | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """The cached ``kind`` of ``sae`` for ``settings`` (in ``folder`` if given), or ``build()`` ->
    ``(tensors, meta)`` computed now (with its CPU time recorded), written to the cache and returned."""
    if not rebuild:
        hit = read_cached(sae, kind, settings, folder)
        if hit is not None:
            return hit
    if what:
        warnings.warn(f"computing {what} for SAE {getattr(sae, 'sas_name', '?')!r} (once; cached in "
                      f"{folder or sae_cache_dir(sae, SHIPPED)})", stacklevel=3)
    wall, cpu = time.perf_counter(), time.process_time()
    tensors, meta = build()
    meta = {**meta, "seconds": round(time.perf_counter() - wall, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
            "threads": torch.get_num_threads()}
    path, meta = write_cached(sae, kind, settings, tensors, meta, folder)
    return tensors, {**meta, "path": str(path)}
