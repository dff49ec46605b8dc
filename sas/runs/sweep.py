"""Sweeps over behaviours (or tasks: concepts) x layers x multipliers: configurations of :func:`sas.runs.grid.run_grid`.

Each finished condition is appended to a JSONL file at once; a rerun with the same file and settings
skips the conditions already there, and a rerun with other settings adds new rows beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..load.data import BEHAVIORS
from .grid import Grid, run_grid
from .store import to_frame


def _model_name(model) -> tuple[str, str]:
    return model.cfg.model_name, str(model.cfg.dtype).removeprefix("torch.")


def behaviors_arg(behaviors) -> list[str]:
    """``"all"``, one name, or a list of names, as a list of behaviours."""
    if isinstance(behaviors, str):
        behaviors = [behaviors]
    return list(BEHAVIORS) if list(behaviors) == ["all"] else list(behaviors)


def ab_sweep(model, behaviors: Sequence[str], layers: Sequence[int], multipliers: Sequence[float],
             method: str = "caa", out: str | Path | None = None, n_test: int | None = None,
             with_side_effects: bool = False, balance: bool = True, vectors=None, progress: bool = True,
             seed: int = 0, saes: dict | None = None, settings: dict | None = None, executor=None) -> pd.DataFrame:
    """A/B behaviour score for every behaviour x layer x multiplier.

    Vectors are built once per behaviour for all layers (from the ``generate`` split, letter-balanced
    unless ``balance=False``) and cached beside ``out``; questions come from the ``test`` split (the first
    ``n_test``). ``vectors`` may map a behaviour to a prebuilt vector of any kind. ``saes`` ({layer: SAE})
    for a sparse ``method``, ``settings`` its settings; ``executor`` runs the shards elsewhere (``sas.runs.ray``).
    Returns the rows of this sweep as a DataFrame.
    """
    name, dtype = _model_name(model)
    if vectors is not None and not isinstance(vectors, dict):  # one vector for every behaviour
        vectors = {b: vectors for b in behaviors_arg(behaviors)}
    grid = Grid("ab", behaviors_arg(behaviors), [method], list(layers), {method: list(multipliers)}, name, dtype,
                method_settings={method: dict(settings or {})},
                eval_settings={"n_test": n_test, "balance": balance, "seed": seed,
                               "side_effects": with_side_effects})
    return to_frame(run_grid(grid, out, model, saes, vectors, executor=executor, progress=progress))


def task_sweep(model, task: str, methods: Sequence[str], layers: Sequence[int],
               multipliers: dict[str, Sequence[float]] | Sequence[float] | None = None,
               out: str | Path | None = None, n_prompts: int = 40, max_new_tokens: int = 30, seed: int = 0,
               vectors=None, progress: bool = True, saes: dict | None = None,
               with_side_effects: bool = False, executor=None) -> pd.DataFrame:
    """Open-ended score of ``task`` (``sentiment``, ``topic``, or any concept name or file:
    :func:`sas.concepts.task_concept`) for every method x layer x multiplier (raw multipliers, on the first
    ``n_prompts`` prompts of the concept's pool); continuations are saved beside ``out`` (``.texts.jsonl``). ``multipliers`` may differ per method (a dict; default: each
    method's own). Multiplier 0 is the unsteered model: generated once, its row reused for every method
    and layer."""
    name, dtype = _model_name(model)
    mults = multipliers if isinstance(multipliers, dict) or multipliers is None else \
        {m: list(multipliers) for m in methods}
    grid = Grid("task", [task], list(methods), list(layers), dict(mults or {}), name, dtype,
                eval_settings={"n_prompts": n_prompts, "max_new_tokens": max_new_tokens, "seed": seed,
                               "side_effects": with_side_effects})
    vectors = {(task, m): v for m, v in vectors.items()} if isinstance(vectors, dict) else vectors
    return to_frame(run_grid(grid, out, model, saes, vectors, executor=executor, progress=progress))
