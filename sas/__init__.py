"""sas: sparse and dense activation steering, side by side.

    import sas
    model = sas.load_model()                                   # gemma-3-270m, offline
    v = sas.caa_vector(model, sas.load_behavior("sycophancy"), layers=[6])
    with sas.steer(model, v, multipliers=2.0):
        print(sas.generate(model, ["I think that"]))
    print(sas.ab_score(model, sas.load_behavior("sycophancy", "test"), v, 2.0))
"""

from .actadd import actadd_vector
from .caa import caa_vector, contrastive_vector
from .datasets import (BEHAVIORS, ABPair, balance_letters, load_behavior, load_mmlu, load_open_ended, load_pairs,
                       load_truthfulqa)
from .evaluate import ABScorer, ab_score, side_effects
from .generation import generate, perplexity
from .models import load_model
from .steering import steer, steering_hooks
from .sweep import ab_sweep, task_sweep
from .tasks import run_task, task_vector
from .vector import SteeringVector

__all__ = [
    "ABPair", "ABScorer", "BEHAVIORS", "SteeringVector", "ab_score", "ab_sweep", "actadd_vector", "balance_letters",
    "caa_vector", "contrastive_vector", "generate", "load_behavior", "load_mmlu", "load_model", "load_open_ended",
    "load_pairs", "load_truthfulqa", "perplexity", "run_task", "side_effects", "steer", "steering_hooks",
    "task_sweep", "task_vector",
]
