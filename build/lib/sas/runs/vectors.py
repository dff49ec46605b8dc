"""The vector a task uses for a method, built from the task's contrastive data."""

from __future__ import annotations

from typing import Sequence

from ..methods.registry import build_vector
from .items import TaskItem


def task_vector(model, task: str, method: str, layers: Sequence[int], saes: dict | None = None, **settings):
    """The ``method`` vector of ``task`` (its contrastive texts, or ActAdd's prompt pair) at ``layers``."""
    item = TaskItem(task)
    return build_vector(model, method, item.contrast, layers, saes, item.positions, **settings)
