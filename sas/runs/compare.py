"""Sparse versus dense: CAA, SAS and the dense direction decoded from the SAS vector (``sas_dense``, which
separates the effect of the sparse edit from that of its direction), built from the same activations and
scored with the same data, positions and evaluation, at the layers of the given SAEs. A configuration of
:func:`sas.runs.grid.run_grid`."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..methods.registry import get_method
from .grid import Grid, run_grid
from .store import to_frame
from .sweep import _model_name, behaviors_arg

METHODS = ("caa", "sas", "sas_dense")


def default_multipliers(methods: Sequence[str] = METHODS) -> dict[str, list[float]]:
    """Each method's own default grid. The SAS edit is several times smaller than CAA's per unit multiplier
    (it keeps tens to hundreds of features, and the reconstruction error), so its grid is wider; compare
    at matched edit size or fluency (``sas bench``), not at matched multiplier."""
    return {m: list(get_method(m).multipliers) for m in methods}


def compare(model, saes: dict[int, object], behaviors: Sequence[str] = (), task: str | None = None,
            multipliers: dict[str, Sequence[float]] | Sequence[float] | None = None,
            out: str | Path | None = None, tau: float = 0.1, mean: str = "all", top_k: int | None = None,
            n_test: int | None = None, n_prompts: int = 40, max_new_tokens: int = 30, seed: int = 0,
            with_side_effects: bool = False, progress: bool = True, methods: Sequence[str] = METHODS,
            executor=None) -> pd.DataFrame:
    """Run CAA, SAS and SAS-dense at each layer in ``saes`` ({layer: SAE}) on A/B ``behaviors`` or an
    open-ended ``task`` (a concept: :func:`sas.concepts.task_concept`); one JSONL row per method x layer x multiplier (resumable). Rows carry
    ``n_features``, ``resid_change`` (mean norm of the edit) and ``cos_caa`` (the vector's direction vs
    CAA's). ``multipliers``: one list for every method, or {method: list}; default: each method's own.
    Multiplier 0 is the unsteered model: it is evaluated once per behaviour/task and reused."""
    if (task is None) == (not behaviors):
        raise ValueError("give A/B behaviours or one task, not both and not neither")
    name, dtype = _model_name(model)
    if multipliers is None or isinstance(multipliers, dict):
        mults = {**default_multipliers(methods), **(multipliers or {})}
    else:
        mults = {m: list(multipliers) for m in methods}
    sparse = {"tau": tau, "mean": mean, "top_k": top_k}
    settings = {m: sparse for m in methods if get_method(m).needs_sae}
    if task is not None:
        grid = Grid("task", [task], list(methods), sorted(saes), mults, name, dtype, method_settings=settings,
                    eval_settings={"n_prompts": n_prompts, "max_new_tokens": max_new_tokens, "seed": seed,
                                   "side_effects": with_side_effects})
    else:
        grid = Grid("ab", behaviors_arg(behaviors), list(methods), sorted(saes), mults, name, dtype,
                    method_settings=settings,
                    eval_settings={"n_test": n_test, "seed": seed, "side_effects": with_side_effects})
    return to_frame(run_grid(grid, out, model, saes, executor=executor, progress=progress))
