"""The prompts a concept is steered on, split into a tuning and a test half by a hash of each prompt.

The split depends on the prompt's text only, so it is the same for every concept, every run and every
machine, and a prompt never moves between halves when the pool grows. Prompts that already contain the
concept's words are dropped for that concept (steering would get credit for words the prompt had).
"""

from __future__ import annotations

from functools import lru_cache

from ..hashing import text_fraction
from ..load.data import load_neutral_prompts
from .schema import Concept

SPLITS = ("tuning", "test")
TUNING_FRACTION = 0.5


def split_of(prompt: str, tuning_fraction: float = TUNING_FRACTION) -> str:
    """``"tuning"`` or ``"test"`` for one prompt: the first 8 bytes of its sha256 as a fraction of 2**64."""
    return "tuning" if text_fraction(prompt) < tuning_fraction else "test"


@lru_cache(maxsize=1)
def _neutral() -> tuple[str, ...]:
    return tuple(load_neutral_prompts())


def prompt_pool(concept: Concept) -> tuple[list[str], list[str]]:
    """``(kept, excluded)``: the concept's prompt pool (deduplicated, in pool order) without and with
    the prompts that contain the concept's words."""
    pool = _neutral() if concept.prompts == "neutral" else list(concept.prompts)
    seen, kept, excluded = set(), [], []
    for p in pool:
        if p in seen or not p.strip():
            continue
        seen.add(p)
        (excluded if concept.mentions_concept(p) else kept).append(p)
    return kept, excluded


def steering_prompts(concept: Concept, split: str, n: int | None = None,
                     tuning_fraction: float = TUNING_FRACTION) -> list[str]:
    """The first ``n`` (default: all) prompts of ``split`` (``"tuning"`` or ``"test"``) for ``concept``.

    Deterministic, and the two splits are disjoint. Raises ``ValueError`` if fewer than ``n`` prompts remain.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'tuning' or 'test'")
    if not 0 < tuning_fraction < 1:
        raise ValueError(f"tuning_fraction must be between 0 and 1, not {tuning_fraction}")
    kept, excluded = prompt_pool(concept)
    out = [p for p in kept if split_of(p, tuning_fraction) == split]
    if n is not None:
        if n > len(out):
            raise ValueError(f"concept {concept.name!r} has {len(out)} {split} prompts ({len(excluded)} of the pool "
                             f"contain the concept's words and are dropped), fewer than the {n} asked for; "
                             "ask for fewer or give more prompts")
        out = out[:n]
    return out
