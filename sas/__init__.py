"""sas: sparse and dense activation steering, side by side.

    import sas
    model = sas.load_model()                                   # gemma-3-270m, offline
    v = sas.caa_vector(model, sas.load_behavior("sycophancy"), layers=[6])
    with sas.steer(model, v, multipliers=2.0):
        print(sas.generate(model, ["I think that"]))
    print(sas.ab_score(model, sas.load_behavior("sycophancy", "test"), v, 2.0))

    sae = sas.load_sae("gemma-3-270m-L9-4k", model)       # a shipped SAE
    sv = sas.sas_vector(model, sae, sas.load_behavior("sycophancy"), tau=0.1)
    with sas.steer(model, sv, multipliers=2.0):            # sparse steering, reconstruction error kept
        ...
"""

from .actadd import actadd_vector
from .caa import caa_vector, contrastive_vector
from .datasets import (BEHAVIORS, ABPair, balance_letters, load_behavior, load_mmlu, load_open_ended, load_pairs,
                       load_truthfulqa)
from .evaluate import ABScorer, ab_score, side_effects
from .generation import generate, perplexity
from .models import load_model
from .sae import evaluate_sae, load_sae
from .sparse import SparseVector, sas_vector, sas_vector_from_texts
from .steering import steer, steering_hooks
from .sweep import ab_sweep, task_sweep
from .tasks import run_task, task_vector
from .vector import SteeringVector

__all__ = [
    "SparseVector", "evaluate_sae", "load_sae", "sas_vector", "sas_vector_from_texts",
    "ABPair", "ABScorer", "BEHAVIORS", "SteeringVector", "ab_score", "ab_sweep", "actadd_vector", "balance_letters",
    "caa_vector", "contrastive_vector", "generate", "load_behavior", "load_mmlu", "load_model", "load_open_ended",
    "load_pairs", "load_truthfulqa", "perplexity", "run_task", "side_effects", "steer", "steering_hooks",
    "task_sweep", "task_vector",
]
