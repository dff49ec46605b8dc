"""Files: written atomically (a reader sees the old file or the new one, never half of one, and a failed write
leaves nothing behind), and files from others parsed strictly (JSON and YAML that cannot crash or exhaust the
reader). Imports nothing from ``sas``, so every layer can use it."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Callable


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``; on any failure
    (a full disk, an exception in ``write``) the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`write_atomic`), making its folders as needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_jsonl(path: str | Path, rows) -> Path:
    """Write ``rows`` as JSON lines (UTF-8, non-ASCII kept) to ``path`` atomically: :func:`write_text`."""
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number; write a finite number")


def _unique_keys(pairs: list) -> dict:
    seen = set()
    for k, _ in pairs:
        if k in seen:
            raise ValueError(f"the key {k!r} appears twice in one object; keep one")
        seen.add(k)
    return dict(pairs)


STRICT_JSON = dict(parse_constant=_no_constant, object_pairs_hook=_unique_keys)


def parse_json(text: str, where: str):
    """``text`` as JSON, strictly: ``ValueError`` naming ``where`` for malformed JSON, ``NaN``/``Infinity``,
    a key twice in one object, or nesting too deep to read (a file from someone else cannot crash the reader)."""
    try:
        return json.loads(text, **STRICT_JSON)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from e
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to read; no sas file nests more than a few levels") from None
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e


def parse_yaml(text: str, where: str):
    """``text`` as YAML (safe types only), refusing aliases (``*name``: a few of them expand a small file into
    gigabytes) and a key twice in one mapping (YAML would keep the last one silently); ``ValueError`` naming
    ``where``."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present: 5x faster

    class Loader(base):
        def construct_document(self, node):
            seen, stack = set(), [node]
            while stack:  # an alias is a node reached twice; stops at the first one, before anything expands
                n = stack.pop()
                if id(n) in seen:
                    raise ValueError(f"line {n.start_mark.line + 1}: a YAML alias (*name); write the value out "
                                     "instead of repeating an &anchor")
                seen.add(id(n))
                if isinstance(n, yaml.SequenceNode):
                    stack.extend(n.value)
                elif isinstance(n, yaml.MappingNode):
                    stack.extend(x for kv in n.value for x in kv)
            return super().construct_document(node)

        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(k, deep=True) for k, _ in node.value]
            dup = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
            if dup is not None:
                raise ValueError(f"line {node.start_mark.line + 1}: the key {dup!r} appears twice in one mapping; "
                                 "keep one")
            return super().construct_mapping(node, deep)

    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML ({e})") from e
    except RecursionError:
        raise ValueError(f"{where}: YAML nested too deeply to read") from None
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
