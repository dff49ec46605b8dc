"""The server's steering vectors: registered by name, or loaded from saved files under one allowed folder.

A request names a vector by its registered name or by a file path relative to the vectors folder
(``sentiment`` or ``caa/sentiment.safetensors``); files are loaded once and cached. A file's kind
(dense :class:`SteeringVector` or sparse :class:`SparseVector`) is read from its saved metadata; a sparse
vector loads its SAE by the name it saved (a shipped SAE such as ``gemma-3-270m-L9-4k``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ..steering.sparse import SparseVector
from ..steering.vector import SteeringVector


class VectorError(ValueError):
    """A vector that cannot be used: ``status`` is the HTTP status, ``code`` OpenAI's error code."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_vector", param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


def load_vector(path: str | Path, model) -> SteeringVector | SparseVector:
    """A saved vector (dense or sparse, told apart by its metadata), checked against ``model``."""
    from safetensors import safe_open

    path = Path(path).with_suffix(".safetensors")
    if not path.is_file():
        raise VectorError(f"no saved vector at {path}", 404, "vector_not_found")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("sas", "{}"))
    except Exception as e:  # not a safetensors file, or a corrupt one
        raise VectorError(f"{path.name} is not a saved sas vector ({type(e).__name__}: {e})") from e
    if not meta:
        raise VectorError(f"{path.name} has no sas metadata; save vectors with SteeringVector.save or SparseVector.save")
    try:
        vec = SparseVector.load(path, model=model) if "sae_names" in meta else SteeringVector.load(path)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise VectorError(f"cannot load {path.name}: {e}") from e
    check_vector(vec, model)
    return vec


def check_vector(vec, model) -> None:
    """Refuse a vector whose width or layers do not fit ``model``."""
    if vec.d_model != model.cfg.d_model:
        raise VectorError(f"the vector has width {vec.d_model} but {model.cfg.model_name} has d_model "
                          f"{model.cfg.d_model} (it was made for {vec.model or 'another model'}); rebuild it for "
                          "this model", 400, "wrong_width")
    bad = [layer for layer in vec.layers if not 0 <= layer < model.cfg.n_layers]
    if bad:
        raise VectorError(f"the vector steers layer(s) {bad}, out of range for {model.cfg.model_name} "
                          f"(layers 0..{model.cfg.n_layers - 1})", 400, "layer_out_of_range")


def describe(name: str, vec, source: str) -> dict:
    """The JSON description of a vector in ``GET /v1/vectors``."""
    sparse = isinstance(vec, SparseVector)
    d = {"id": name, "object": "steering_vector", "kind": "sparse" if sparse else "dense", "method": vec.method,
         "behavior": vec.behavior, "model": vec.model, "layers": vec.layers, "d_model": vec.d_model,
         "positions": vec.positions, "source": source}
    if sparse:
        d["n_features"] = vec.n_features()
        d["saes"] = vec.sae_names
    else:
        d["norms"] = {str(k): round(v, 4) for k, v in vec.norms().items()}
    return d


class VectorStore:
    """Vectors by name. ``folder``: the one folder requests and ``POST /v1/vectors`` may load files from
    (None: only vectors registered in code or at start-up)."""

    def __init__(self, model, folder: str | Path | None = None):
        self.model = model
        self.folder = Path(folder).resolve() if folder is not None else None
        self._vectors: dict[str, tuple[object, str]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, vec, source: str = "registered") -> dict:
        check_vector(vec, self.model)
        with self._lock:
            self._vectors[name] = (vec, source)
        return describe(name, vec, source)

    def remove(self, name: str) -> None:
        with self._lock:
            if self._vectors.pop(name, None) is None:
                raise VectorError(f"no vector named {name!r}", 404, "vector_not_found")

    def _file(self, ref: str) -> Path:
        if self.folder is None:
            raise VectorError(f"no vector named {ref!r} is registered, and loading files is off (start the server "
                              "with --vectors-dir DIR to allow files under DIR)", 404, "vector_not_found")
        path = (self.folder / ref).with_suffix(".safetensors").resolve()
        if not path.is_relative_to(self.folder):
            raise VectorError(f"{ref!r} is outside the vectors folder; name a file under it", 403, "forbidden_path")
        return path

    def load(self, name: str, path: str | None = None) -> dict:
        """Load ``path`` (relative to the folder; default ``name``) and register it as ``name``."""
        file = self._file(path or name)
        return self.register(name, load_vector(file, self.model), f"file:{file.relative_to(self.folder)}")

    def get(self, ref: str):
        """The vector registered as ``ref``, else the file ``ref`` under the folder (loaded once)."""
        with self._lock:
            hit = self._vectors.get(ref)
        if hit is not None:
            return hit[0]
        file = self._file(ref)
        if not file.is_file():
            known = ", ".join(sorted(self._vectors)) or "none"
            raise VectorError(f"unknown vector {ref!r}: not a registered name (registered: {known}) nor a file in "
                              "the vectors folder", 404, "vector_not_found")
        return self.load(ref, ref) and self._vectors[ref][0]

    def list(self) -> list[dict]:
        with self._lock:
            items = sorted(self._vectors.items())
        return [describe(name, vec, source) for name, (vec, source) in items]
