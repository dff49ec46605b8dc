"""Open-ended tasks by name. A task is one file in this folder that registers its contrastive pairs, its
steering prompts and its scorer:

    register_task(Task("sentiment", pairs=sentiment_pairs, score=vader_scores, actadd=("Love", "Hate")))

``pairs() -> (positive texts, negative texts)`` builds vectors; ``prompts(n) -> list[str]`` are the
prompts whose continuations are scored; ``score(texts) -> list[float]`` scores each continuation.
Every module in this folder is imported when the registry is first read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..._registry import Registry
from ...load.data import load_neutral_prompts


@dataclass(frozen=True)
class Task:
    name: str
    pairs: Callable[[], tuple[list[str], list[str]]]
    score: Callable[[list[str]], list[float]]
    prompts: Callable[[int | None], list[str]] = load_neutral_prompts
    actadd: tuple[str, str] | None = None  # ActAdd's prompt pair, if the task has one
    layers: tuple[int, ...] = (2, 4, 6, 8, 10, 12)  # the default sweep
    description: str = ""
    settings: dict = field(default_factory=dict)


_TASKS = Registry("task", "sas.evaluation.tasks", skip=("registry", "run"))


def register_task(task: Task) -> Task:
    _TASKS[task.name] = task
    return task


def tasks() -> dict[str, Task]:
    """All registered tasks, by name (the modules of this folder are imported on the first call)."""
    return _TASKS.all()


def get_task(name: str) -> Task:
    return _TASKS.get_entry(name)
