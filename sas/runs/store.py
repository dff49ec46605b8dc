"""The results store: JSONL rows appended as they finish, read back for resuming."""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_rows(path: str | Path | None) -> list[dict]:
    """The rows of a results file (a missing file has none). A torn last line is ignored."""
    if path is None or not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by an interrupted write; its condition runs again
    return rows


def append_row(path: str | Path | None, row: dict) -> None:
    """Append one row and flush it to disk."""
    if path is None:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torn = False  # a line cut by an interrupted write: start a new line, or this row is lost with it
    if Path(path).exists() and Path(path).stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
