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

The package reads as the pipeline: ``load`` -> ``forward`` -> ``activations`` -> ``steering``
(vectors and hooks) -> ``methods`` (vector builders) -> ``evaluation`` -> ``runs`` -> ``reports``.
Names are imported on first use, so ``import sas`` stays light.
"""

from __future__ import annotations

import importlib

from . import _shims

_shims.install()

# public name -> module that defines it
_API = {
    "load_model": "load.models",
    "load_sae": "load.saes", "registry": "load.saes",
    "ABPair": "load.data", "BEHAVIORS": "load.data", "balance_letters": "load.data", "load_behavior": "load.data",
    "load_mmlu": "load.data", "load_open_ended": "load.data", "load_pairs": "load.data",
    "load_truthfulqa": "load.data",
    "generate": "forward.generate", "perplexity": "forward.likelihood",
    "SteeringVector": "steering.vector", "SparseVector": "steering.sparse",
    "steer": "steering.steer", "steering_hooks": "steering.steer", "Receipt": "steering.steer",
    "NoEdit": "steering.steer",
    "load_vector": "steering.kinds",
    "Condition": "steering.condition", "condition_from_texts": "steering.condition",
    "load_condition": "steering.condition",
    "caa_vector": "methods.caa", "contrastive_vector": "methods.caa", "actadd_vector": "methods.actadd",
    "sas_vector": "methods.sas", "sas_vector_from_texts": "methods.sas",
    "build_vector": "methods.registry", "METHODS": "methods.registry",
    "ABScorer": "evaluation.ab", "ab_score": "evaluation.ab", "side_effects": "evaluation.side_effects",
    "evaluate_sae": "evaluation.sae_quality",
    "run_task": "evaluation.concept", "TASKS": "concepts.tasks",
    "task_vector": "runs.vectors",
    "ab_sweep": "runs.sweep", "task_sweep": "runs.sweep", "compare": "runs.compare",
    "compose": "runs.compose", "composition_table": "runs.compose",
    "run_grid": "runs.grid", "Grid": "runs.grid", "ResultStore": "runs.store",
    "save_gguf": "export.gguf", "load_gguf": "export.gguf",
}
_SUBPACKAGES = {"load", "forward", "activations", "steering", "methods", "evaluation", "runs", "reports",
                "hooks", "cli", "datasets", "tasks", "features"}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:  # sas.tasks, sas.features, ...: old and new module paths as attributes
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'sas' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
