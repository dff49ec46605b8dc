"""The vector a task or behaviour uses for a method, built from its contrastive data."""

from __future__ import annotations

from typing import Sequence

from ..evaluation.tasks import ACTADD_PROMPTS, TASKS, sentiment_pairs, topic_pairs
from ..methods.actadd import actadd_vector
from ..methods.caa import contrastive_vector
from ..steering.vector import SteeringVector


def task_vector(model, task: str, method: str, layers: Sequence[int]) -> SteeringVector:
    """The steering vector a task uses: ActAdd's prompt pair, or CAA from contrastive sentences."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    if method == "actadd":
        pos, neg = ACTADD_PROMPTS[task]
        return actadd_vector(model, pos, neg, layers, behavior=task)
    if method == "caa":
        if task == "sentiment":
            pos, neg = sentiment_pairs()
        else:
            pos, neg = topic_pairs()
        return contrastive_vector(model, pos, neg, layers, behavior=task, positions="after_prompt")
    raise ValueError(f"method {method!r} has no vector for task {task!r}; use 'caa' or 'actadd'")
