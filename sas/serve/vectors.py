"""The server's steering vectors: registered by name, or loaded from saved files under one allowed folder.

A request names a vector by its registered name or by a file path relative to the vectors folder
(``sentiment`` or ``caa/sentiment.safetensors``); files are loaded once and cached. A file's kind
(dense or sparse) is read from its saved metadata by :func:`sas.steering.load_vector`; a sparse
vector loads its SAE by the name it saved (a shipped SAE such as ``gemma-3-270m-L9-4k``).
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

from ..steering import kinds
from ..steering.steer import SteeringError, Term, check_term
from ..steering.vector import vector_path


class VectorError(ValueError):
    """A vector that cannot be used: ``status`` is the HTTP status, ``code`` OpenAI's error code."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_vector", param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


def read_vector(path: str | Path, model):
    """A saved vector of either kind (:func:`sas.steering.load_vector`), checked against ``model``; a
    :class:`VectorError` for a file that cannot be used."""
    try:
        vec = kinds.load_vector(path, model=model)
    except FileNotFoundError as e:
        raise VectorError(str(e), 404, "vector_not_found") from e
    except (ValueError, KeyError, OSError) as e:
        raise VectorError(f"cannot load {Path(path).name}: {e}") from e
    check_vector(vec, model)
    return vec


def __getattr__(name: str):
    if name == "load_vector":  # moved: one loader of saved vectors for every caller
        warnings.warn("sas.serve.vectors.load_vector moved to sas.steering.load_vector (the server's checked "
                      "version is sas.serve.vectors.read_vector); the old name goes in sas 0.3", DeprecationWarning,
                      stacklevel=2)
        return read_vector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_vector(vec, model) -> None:
    """Refuse a vector that does not fit ``model`` (its width, layers or hook points), as steering would."""
    try:
        check_term(model, Term(vec, 0.0))
    except SteeringError as e:
        raise VectorError(str(e), 400, e.code) from e


def describe(name: str, vec, source: str) -> dict:
    """The JSON description of a vector in ``GET /v1/vectors``."""
    return {"id": name, "object": "steering_vector", "method": vec.method, "behavior": vec.behavior,
            "model": vec.model, "layers": vec.layers, "d_model": vec.d_model, "positions": vec.positions,
            "source": source, **vec.summary()}


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
        path = vector_path(self.folder / ref).resolve()
        if not path.is_relative_to(self.folder):
            raise VectorError(f"{ref!r} is outside the vectors folder; name a file under it", 403, "forbidden_path")
        return path

    def load(self, name: str, path: str | None = None) -> dict:
        """Load ``path`` (relative to the folder; default ``name``) and register it as ``name``."""
        file = self._file(path or name)
        return self.register(name, read_vector(file, self.model), f"file:{file.relative_to(self.folder)}")

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
