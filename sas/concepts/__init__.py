"""Benchmark concepts as data: contrastive pairs, steering prompts split into tuning/test, offline scorers.

    from sas.concepts import get_concept, steering_prompts
    c = get_concept("weddings")
    prompts = steering_prompts(c, "test", 100)
    scores = c.scorer().score(continuations)      # one float per continuation
    task_concept("sentiment")                     # sas 0.1's tasks are concepts too
"""

from .prompts import SPLITS, prompt_pool, split_of, steering_prompts
from .schema import (CONCEPT_DIR, MIN_PAIRS, Concept, ContrastivePair, concept_from_dict, get_concept, load_concept,
                     shipped_concepts)
from .scorers import SCORERS, Scorer, get_scorer, Lexicon, register_scorer
from .tasks import TASK_DIR, TASK_LAYERS, TASKS, task_concept, task_prompts

__all__ = [
    "CONCEPT_DIR", "MIN_PAIRS", "SCORERS", "SPLITS", "Concept", "ContrastivePair", "Scorer", "concept_from_dict",
    "Lexicon", "get_concept", "get_scorer", "load_concept", "prompt_pool", "register_scorer",
    "shipped_concepts", "split_of", "steering_prompts", "TASK_DIR", "TASK_LAYERS", "TASKS", "task_concept",
    "task_prompts",
]
