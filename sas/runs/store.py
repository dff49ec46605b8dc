"""The results store: one JSONL row per condition, appended as it finishes, found again by its resume key.

A row holds its condition (``model, method, layer, multiplier`` and its item in the column of its kind:
``behavior``, ``task`` or ``concept``, from :data:`sas.runs.items.ITEMS`), every setting that
changes its result (dtype, the method's settings, the SAE's name and hash, the data hash, the
evaluation's settings, seed, n) and the scores. A rerun with other settings adds rows beside the old
ones and never returns a stale one. Rows written by sas 0.1 lack most settings: they read as the
defaults they were made with (:data:`LEGACY`), so old files resume.

A last line cut by a killed process is reported with its file and line, removed from the file, and
its condition redone. A malformed line elsewhere, or a file that holds something other than this
kind of result, is an error: the store never appends to a file it does not understand.

One run at a time per file: a run holds the file (:func:`hold`, a lock released when the process ends,
also by ``kill -9``) from reading it to its last row, and a second run on a held file is refused, so
two runs can neither lose nor double a row.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ..files import write_atomic

ANY = object()  # a setting sas 0.1 did not record: an old row matches any value of it

# setting -> the value an old row without it was made with (a function of the row, a value, or ANY)
LEGACY = {
    "dtype": "float32", "seed": 0, "max_new_tokens": 30, "balance": True, "tau": 0.1, "mean": "all", "top_k": None,
    "side_effects": lambda r: "mmlu" in r, "n_test": lambda r: r.get("n"), "n_prompts": lambda r: r.get("n"),
    "data_hash": ANY, "sae": ANY, "sae_sha256": ANY, "vector_hash": ANY,
}
CORE = ("model", "method", "layer", "multiplier")


def item_columns() -> dict[str, str]:
    """Item kind -> the column that names a row's item (``{"ab": "behavior", ...}``), from the item registry."""
    from .items import ITEMS

    return {kind: cls.column for kind, cls in ITEMS.items()}


def _legacy(row: dict, name: str):
    d = LEGACY.get(name)
    return d(row) if callable(d) else d


def _finite(row: dict, where: str) -> dict:
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        warnings.warn(f"{where}: non-finite {bad} written as null")
        row = {k: (None if k in bad else v) for k, v in row.items()}
    return row


def _write_line(path: Path, line: str) -> None:
    from filelock import FileLock

    with FileLock(f"{path}.lock"):  # two processes appending to one file write whole lines
        with open(path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


@contextmanager
def hold(path: str | Path | None):
    """Hold the results file ``path`` for one run (re-entrant within a process; ``None``: nothing to hold).
    ``BlockingIOError`` naming the fix if another process holds it."""
    if path is None:
        yield
        return
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{path.resolve()}.run.lock", is_singleton=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BlockingIOError(f"another sas run is writing {path}; wait for it to finish (then run again: finished "
                              "rows are reused), or write this run to another --out") from None
    try:
        yield
    finally:
        lock.release()


class ResultStore:
    """Rows of one item kind (a key of :data:`sas.runs.items.ITEMS`: ``"ab"``, ``"task"`` or ``"concept"``) in
    ``path`` (``None``: kept in memory only)."""

    def __init__(self, path: str | Path | None = None, kind: str = "ab"):
        columns = item_columns()
        if kind not in columns:
            raise ValueError(f"kind must be one of {sorted(columns)}, not {kind!r}")
        self.path, self.kind, self.item = (Path(path) if path else None), kind, columns[kind]
        self.rows: list[dict] = []
        self._index: dict[tuple, list[dict]] = {}
        self._torn = False  # a torn last line was seen: removed before the next append
        if self.path is not None and self.path.exists():
            for row in self._read():
                self._add(row)

    # reading
    def _read(self) -> list[dict]:
        text = self.path.read_text(encoding="utf-8")
        lines = text.split("\n")
        rows = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            last = i == len(lines) or (i == len(lines) - 1 and lines[-1] == "")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                if last and not text.endswith("\n"):
                    warnings.warn(f"{self.path}:{i}: a torn row (a process was killed while writing it); it is "
                                  "removed and its condition is run again")
                    self._torn = True
                    continue
                raise ValueError(f"{self.path}:{i}: malformed JSON ({e.msg}); this is not a results file sas "
                                 "wrote, or it was edited: fix or remove that line, or choose another --out") from e
            if not isinstance(row, dict) or any(k not in row for k in CORE):
                raise ValueError(f"{self.path}:{i}: not a sas result row (it needs {', '.join(CORE)}); refusing to "
                                 "append results to this file: choose another --out")
            if self.item not in row:
                other = next((k for k in item_columns().values() if k in row), "?")
                raise ValueError(f"{self.path}:{i}: holds {other} results, not {self.item} results; write this run "
                                 "to another --out")
            rows.append(row)
        return rows

    def _add(self, row: dict) -> None:
        self.rows.append(row)
        core = (row["method"], row[self.item], int(row["layer"]), float(row["multiplier"]))
        self._index.setdefault(core, []).append(row)

    def find(self, key: dict) -> dict | None:
        """The newest row whose settings equal ``key`` (a row without a setting reads it as :data:`LEGACY`)."""
        core = (key["method"], key[self.item], int(key["layer"]), float(key["multiplier"]))
        for row in reversed(self._index.get(core, [])):
            if all(self._matches(row, k, v) for k, v in key.items()):
                return row
        return None

    @staticmethod
    def _matches(row: dict, name: str, value) -> bool:
        have = row[name] if name in row else _legacy(row, name)
        return have is ANY or have == value

    def find_like(self, key: dict, ignore=("method", "layer")) -> dict | None:
        """The newest row that equals ``key`` on everything but the settings in ``ignore`` (the unsteered row
        of another method or layer, when ``ignore`` names what the method and its vector set)."""
        for row in reversed(self.rows):
            if row[self.item] == key[self.item] and float(row["multiplier"]) == float(key["multiplier"]) and \
                    all(self._matches(row, k, v) for k, v in key.items() if k not in ignore):
                return row
        return None

    # writing
    def append(self, row: dict, texts: list[str] | None = None) -> None:
        """Add ``row`` (and write it as one line, flushed to disk); ``texts`` go to the ``.texts.jsonl`` file."""
        row = _finite(dict(row), str(self.path or "results"))
        self._add(row)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._torn:
            self._repair()
        _write_line(self.path, json.dumps(row, allow_nan=False) + "\n")
        if texts is not None:
            keep = {k: row[k] for k in (*CORE, self.item, "split", "seed", "max_new_tokens") if k in row}
            _write_line(self.texts_path, json.dumps({**keep, "texts": texts}) + "\n")

    def _repair(self) -> None:
        """Rewrite the file without its torn last line (atomically, under the lock appends take), so pandas and
        jq read it again. The file is read again here: only a last line that still does not end the file with a
        newline is removed."""
        from filelock import FileLock

        with FileLock(f"{self.path}.lock"):
            text = self.path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                good = text[:text.rfind("\n") + 1]
                write_atomic(self.path, lambda tmp: tmp.write_text(good, encoding="utf-8"))
        self._torn = False

    @property
    def texts_path(self) -> Path | None:
        return self.path.with_name(self.path.stem + ".texts.jsonl") if self.path else None

    @property
    def vector_dir(self) -> Path | None:
        return self.path.with_name(self.path.stem + ".vectors") if self.path else None


def read_rows(path: str | Path | None) -> list[dict]:
    """The rows of a results file of either kind (a missing file has none; a torn last line is left out)."""
    if path is None or not Path(path).exists():
        return []
    rows = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines):
                continue  # a torn last line
            raise ValueError(f"{path}:{i}: malformed JSON ({e.msg})") from e
    return rows


def append_row(path: str | Path | None, row: dict) -> None:
    """Append one row (any JSON object) to a JSONL file and flush it to disk."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_line(path, json.dumps(_finite(dict(row), str(path)), allow_nan=False) + "\n")


def to_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as a DataFrame, sorted by method, item (behaviour, task or concept), layer and multiplier."""
    df = pd.DataFrame(rows)
    keys = [k for k in ("method", *dict.fromkeys(item_columns().values()), "layer", "multiplier") if k in df]
    return df.sort_values(keys).reset_index(drop=True) if len(df) else df
