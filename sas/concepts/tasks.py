"""sas 0.1's open-ended tasks as names of concepts: ``--task sentiment`` and ``--task topic`` (and
:func:`sas.task_sweep`) run a concept, and any concept name or file works in their place.

    task_concept("sentiment")   # sas/data/concepts/tasks/sentiment.yaml: the task's 100 pairs, ActAdd's Love/Hate
    task_concept("topic")       # the shipped weddings concept (ActAdd's wedding topic)
    task_prompts(c, 40)         # the first 40 prompts of its pool (a task has no tuning/test split)

A task steers with raw multipliers (the vector's own units); ``sas bench`` steers concepts with relative
strengths on their tuning and test splits.
"""

from __future__ import annotations

from pathlib import Path

from .prompts import prompt_pool
from .schema import CONCEPT_DIR, Concept, get_concept

TASK_DIR = CONCEPT_DIR / "tasks"  # outside the benchmark's default concepts (the files of CONCEPT_DIR itself)
TASKS: dict[str, str | Path] = {"sentiment": TASK_DIR / "sentiment.yaml", "topic": "weddings"}
TASK_LAYERS = (2, 4, 6, 8, 10, 12)  # a task sweep's default layers


def task_concept(name: str | Path) -> Concept:
    """The concept a task name stands for (:data:`TASKS`), else the shipped concept or concept file ``name``."""
    return get_concept(TASKS.get(str(name), name))


def task_prompts(concept: Concept, n: int) -> list[str]:
    """The first ``n`` prompts of ``concept``'s pool (both splits, in pool order); ``ValueError`` if it has fewer."""
    kept, _ = prompt_pool(concept)
    if n > len(kept):
        raise ValueError(f"concept {concept.name!r} has {len(kept)} steering prompts, fewer than the {n} asked "
                         "for; ask for fewer")
    return kept[:n]


def sentiment_pairs() -> tuple[list[str], list[str]]:
    """The sentiment task's 100 positive and negative sentences (one adjective apart)."""
    c = task_concept("sentiment")
    return c.positive_texts(), c.negative_texts()


def topic_pairs() -> tuple[list[str], list[str]]:
    """The topic task's sentences about weddings and about other things (the weddings concept's pairs)."""
    c = task_concept("topic")
    return c.positive_texts(), c.negative_texts()
