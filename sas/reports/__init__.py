"""Reports: tables, plots, feature inspection pages; they format what the layers below computed."""

import importlib
import warnings
from typing import Callable


def moved(old: str, new: str, names) -> Callable:
    """A module ``__getattr__`` for ``names`` that moved from module ``old`` to module ``new`` (both dotted paths):
    the old path keeps working for one release, with a ``DeprecationWarning`` naming the new one."""
    def __getattr__(name: str):
        if name in names:
            warnings.warn(f"{old}.{name} moved to {new}.{name}; the old path goes in sas 0.3", DeprecationWarning,
                          stacklevel=2)
            return getattr(importlib.import_module(new), name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__
