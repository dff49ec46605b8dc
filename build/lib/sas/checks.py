"""Argument checks for the public entry points: a wrong type or value fails here, with the argument's name and
the fix, instead of deep inside a forward pass or, worse, silently (a string iterated by character, a NaN
multiplier). Imports nothing from ``sas``, so every layer can use it."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch


def finite_number(x: Any, name: str) -> float:
    """``x`` as a float; ``ValueError`` if it is not a finite real number (NaN and inf steer nowhere)."""
    if isinstance(x, bool) or not isinstance(x, (Real, torch.Tensor)) or \
            (isinstance(x, torch.Tensor) and x.numel() != 1):
        raise TypeError(f"{name} must be a number, not {type(x).__name__} ({x!r})")
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, not {v}")
    return v


def strength(x: Any, name: str = "multiplier"):
    """A steering strength: a finite float, or a 1-D tensor of finite per-row strengths ``[batch]``."""
    if isinstance(x, torch.Tensor) and x.ndim == 1:
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} must be finite; the tensor holds NaN or inf")
        return x
    return finite_number(x, name)


def positive_int(x: Any, name: str) -> int:
    """``x`` as an int of at least 1 (a count or a batch size); ``ValueError`` naming ``name`` otherwise."""
    if isinstance(x, bool) or not isinstance(x, Integral) or x < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {x!r}")
    return int(x)


def int_list(x: Any, name: str) -> list[int]:
    """``x`` (an int or a sequence of ints) as a list of ints. A string is refused: ``layers="12"`` would
    otherwise be read as layers 1 and 2."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a list of integers such as [12], not the string {x!r}")
    if isinstance(x, Integral) and not isinstance(x, bool):
        return [int(x)]
    try:
        items = list(x)
    except TypeError:
        raise TypeError(f"{name} must be a list of integers, not {type(x).__name__}") from None
    bad = [i for i in items if isinstance(i, bool) or not isinstance(i, Integral)]
    if bad:
        raise TypeError(f"{name} must hold integers; got {bad[0]!r}")
    return [int(i) for i in items]


def text_list(x: Any, name: str) -> list[str]:
    """``x`` as a non-empty list of strings. A single string is refused: it would be read one character at a
    time."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a list of texts, not one string ({x[:40]!r}); wrap it: [{x[:20]!r}]")
    try:
        items = list(x)
    except TypeError:
        raise TypeError(f"{name} must be a list of texts, not {type(x).__name__}") from None
    if not items:
        raise ValueError(f"{name} is empty: give at least one text")
    bad = [i for i in items if not isinstance(i, str)]
    if bad:
        raise TypeError(f"{name} must hold strings; got {type(bad[0]).__name__} {bad[0]!r}")
    return items


def text_pairs(positive: Any, negative: Any) -> tuple[list[str], list[str]]:
    """Two lists of texts of the same length (contrastive pairs, row i against row i)."""
    pos, neg = text_list(positive, "positive"), text_list(negative, "negative")
    if len(pos) != len(neg):
        raise ValueError(f"need as many positive as negative texts (pairs, row by row); got {len(pos)} and {len(neg)}")
    return pos, neg
