"""The server's steering vectors: registered by name, or loaded from saved files under one allowed folder.

A request names a vector by its registered name or by a file path relative to the vectors folder
(``sentiment`` or ``caa/sentiment.safetensors``). Every spelling of one file (``./x``, ``a/../x``, its
absolute path) resolves to the same real file, which is loaded once and kept among the ``max_files``
most recently used; the sparse vectors share one copy of each SAE. A file's kind (dense or
sparse) is read from its saved metadata by :func:`sas.steering.load_vector`; a sparse vector
loads its SAE by the name it saved (a shipped SAE such as ``gemma-3-270m-L9-4k``).

Names given at start-up are read-only; ``POST /v1/vectors`` may add up to ``max_named`` more under new
names (a taken name is refused) and ``DELETE`` removes only those.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from pathlib import Path

from ..steering import kinds
from ..steering.steer import SteeringError, Term, check_term
from ..steering.vector import vector_path


class VectorError(ValueError):
    """A vector that cannot be used: ``status`` is the HTTP status, ``code`` OpenAI's error code."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_vector", param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


def read_vector(path: str | Path, model, saes: dict | None = None):
    """A saved vector of either kind (:func:`sas.steering.load_vector`), checked against ``model``; a
    :class:`VectorError` for a file that cannot be used. ``saes``: ``{name: SAE}`` shared between sparse vectors;
    a registry SAE a vector names is loaded into it once and reused (None: each sparse vector loads its own)."""
    try:
        from ..steering.condition import is_condition_file
        from ..steering.vector import read_vector_file

        _, _, meta = read_vector_file(path, "steering vector")
        if is_condition_file(meta):  # a condition file lives beside the vectors and is named the same way
            return read_condition(path, meta, model, saes)
        vec = kinds.load_vector(path, model=model, saes=_shared_saes(meta, model, saes))
    except FileNotFoundError as e:
        raise VectorError(str(e), 404, "vector_not_found") from e
    except (ValueError, KeyError, OSError) as e:
        raise VectorError(f"cannot load {Path(path).name}: {e}") from e
    check_vector(vec, model)
    return vec


def read_condition(path, meta: dict, model, saes: dict | None = None):
    """A saved condition (:func:`sas.steering.condition.load_condition`), its registry SAE shared through ``saes``
    ({name: SAE}) as sparse vectors share theirs; ``ValueError`` for one that does not fit ``model``."""
    from ..load.saes import load_sae, registry
    from ..steering.condition import load_condition

    name = (meta.get("sae") or {}).get("name")
    sae = None
    if saes is not None and name in registry():
        sae = saes[name] = saes[name] if name in saes else load_sae(name, model)
    cond = load_condition(path, model, sae)
    cond.check(model, [])
    return cond


def __getattr__(name: str):
    if name == "load_vector":  # moved: one loader of saved vectors for every caller
        warnings.warn("sas.serve.vectors.load_vector moved to sas.steering.load_vector (the server's checked "
                      "version is sas.serve.vectors.read_vector); the old name goes in sas 0.3", DeprecationWarning,
                      stacklevel=2)
        return read_vector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _shared_saes(meta: dict, model, cache: dict | None) -> dict | None:
    """``{layer: SAE}`` from ``cache`` (filled on first use) for the registry SAEs ``meta`` names, or None to let
    ``SparseVector.load`` load them itself (and refuse a name that is not in the registry)."""
    from ..load.saes import load_sae, registry

    if cache is None:
        return None
    names = {int(k): v for k, v in meta.get("sae_names", {}).items()}
    names.update({int(k): v["name"] for k, v in (meta.get("sae") or {}).items() if isinstance(v, dict) and "name" in v})
    known = registry()
    if not names or any(n not in known for n in names.values()):
        return None
    for n in set(names.values()) - set(cache):
        cache[n] = load_sae(n, model)
    return {layer: cache[n] for layer, n in names.items()}


def _taken(name: str) -> VectorError:
    return VectorError(f"a vector named {name!r} exists already; pick another name (or DELETE it first, if it was "
                       "added through the API)", 409, "vector_exists", "name")


def check_vector(vec, model) -> None:
    """Refuse a vector that does not fit ``model`` (its width, layers or hook points), as steering would."""
    from ..steering.condition import Condition

    if isinstance(vec, Condition):
        raise VectorError(f"{vec.name!r} is a condition, not a steering vector: name its file in a steering term's "
                          "\"condition\"", 400, "not_a_vector")
    try:
        check_term(model, Term(vec, 0.0))
    except SteeringError as e:
        raise VectorError(str(e), 400, e.code) from e


def describe(name: str, vec, source: str, readonly: bool = False) -> dict:
    """The JSON description of a vector in ``GET /v1/vectors``."""
    return {"id": name, "object": "steering_vector", "method": vec.method, "behavior": vec.behavior,
            "model": vec.model, "layers": vec.layers, "d_model": vec.d_model, "positions": vec.positions,
            "source": source, "readonly": readonly, **vec.summary()}


class VectorStore:
    """Vectors by name. ``folder``: the one folder requests and ``POST /v1/vectors`` may load files from
    (None: only vectors registered in code or at start-up); ``max_named``: how many names ``add`` may
    register; ``max_files``: how many files requests that name a path keep loaded (least recently used go)."""

    def __init__(self, model, folder: str | Path | None = None, max_named: int = 64, max_files: int = 16):
        self.model, self.max_named, self.max_files = model, max_named, max_files
        self.folder = Path(folder).resolve() if folder is not None else None
        self._named: dict[str, tuple[object, str, bool]] = {}  # name -> (vector, source, read-only)
        self._files: OrderedDict[Path, tuple[int, object]] = OrderedDict()  # real file -> (mtime_ns, vector)
        self._saes: dict = {}  # SAE name -> SAE, shared by every sparse vector
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()  # one file read at a time: two requests for a new file load it once

    def register(self, name: str, vec, source: str = "registered", readonly: bool = True) -> dict:
        """Register ``vec`` as ``name`` (read-only by default: the operator's vectors); a taken name is refused."""
        check_vector(vec, self.model)
        with self._lock:
            if name in self._named:
                raise _taken(name)
            if not readonly and sum(not ro for _, _, ro in self._named.values()) >= self.max_named:
                raise VectorError(f"this server holds its limit of {self.max_named} added vectors; DELETE one first",
                                  429, "too_many_vectors", None)
            self._named[name] = (vec, source, readonly)
        return describe(name, vec, source, readonly)

    def remove(self, name: str) -> None:
        with self._lock:
            hit = self._named.get(name)
            if hit is None:
                raise VectorError(f"no vector named {name[:80]!r}", 404, "vector_not_found")
            if hit[2]:
                raise VectorError(f"{name!r} was registered when the server started and is read-only", 403,
                                  "vector_readonly")
            del self._named[name]

    def add(self, name: str, path: str | None = None) -> dict:
        """Load the file ``path`` (relative to the folder; default ``name``) and register it as ``name``."""
        with self._lock:
            if name in self._named:  # refuse before reading the file
                raise _taken(name)
        file = self._file(path or name)
        return self.register(name, self._read(file), f"file:{file.relative_to(self.folder)}", readonly=False)

    def get(self, ref: str):
        """The vector registered as ``ref``, else the file ``ref`` under the folder (loaded once)."""
        with self._lock:
            hit = self._named.get(ref)
        return hit[0] if hit is not None else self._read(self._file(ref))

    def list(self) -> list[dict]:
        with self._lock:
            items = sorted(self._named.items())
        return [describe(name, vec, source, ro) for name, (vec, source, ro) in items]

    def _file(self, ref: str) -> Path:
        """The real file ``ref`` names under the folder; errors name ``ref``, never the folder's own path."""
        if self.folder is None:
            raise VectorError(f"no vector named {ref!r} is registered, and loading files is off (start the server "
                              "with --vectors-dir DIR to allow files under DIR)", 404, "vector_not_found")
        try:
            path = vector_path(self.folder / ref).resolve()
            inside = path.is_relative_to(self.folder)
            exists = inside and path.is_file()
        except (OSError, ValueError) as e:  # a NUL byte, a name too long for the file system, "/"
            raise VectorError(f"{ref[:80]!r} is not a usable vector name or path ({type(e).__name__}); name a "
                              "registered vector or a file under the vectors folder", 400, "invalid_vector") from None
        if not inside:
            raise VectorError(f"{ref[:80]!r} is outside the vectors folder; name a file under it", 403, "forbidden_path")
        if not exists:
            raise VectorError(f"unknown vector {ref[:80]!r}: not a registered name nor a file in the vectors folder "
                              "(GET /v1/vectors lists the registered names)", 404, "vector_not_found")
        return path

    def _read(self, file: Path):
        """The vector in ``file`` (a real file under the folder), from the cache unless the file changed."""
        try:
            mtime = file.stat().st_mtime_ns
        except OSError:  # gone since it was found
            raise VectorError(f"{file.name} is no longer in the vectors folder", 404, "vector_not_found") from None
        with self._load_lock:
            with self._lock:
                hit = self._files.get(file)
                if hit is not None and hit[0] == mtime:
                    self._files.move_to_end(file)
                    return hit[1]
            try:
                vec = read_vector(file, self.model, self._saes)
            except VectorError as e:  # say where relative to the folder, not the server's absolute path
                e.args = (str(e).replace(f"{self.folder}/", ""),)
                raise
            with self._lock:
                self._files[file] = (mtime, vec)
                self._files.move_to_end(file)
                while len(self._files) > self.max_files:
                    self._files.popitem(last=False)
            return vec
