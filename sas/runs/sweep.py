"""Sweeps over behaviours (or tasks) x layers x multipliers, written row by row and resumable.

Each finished condition is appended to a JSONL file at once; a rerun with the same file skips
the conditions already there, so an interrupted sweep loses at most the condition it was on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import pandas as pd
from tqdm.auto import tqdm

from ..evaluation.ab import ABScorer
from ..evaluation.side_effects import side_effects
from ..evaluation.tasks import run_task
from .vectors import task_vector
from ..load.data import BEHAVIORS, load_behavior
from ..methods.caa import caa_vector
from ..reports.tables import to_frame
from ..steering.vector import SteeringVector
from .store import append_row, read_rows


def _key(row: dict, what: str) -> tuple:
    return (row["model"], row["method"], row[what], int(row["layer"]), float(row["multiplier"]))


def _cached_vector(path: Path | None, build) -> SteeringVector:
    if path is not None and path.with_suffix(".safetensors").exists():
        return SteeringVector.load(path)
    v = build()
    if path is not None:
        v.save(path)
    return v


def ab_sweep(model, behaviors: Sequence[str], layers: Sequence[int], multipliers: Sequence[float],
             method: str = "caa", out: str | Path | None = None, n_test: int | None = None,
             with_side_effects: bool = False, balance: bool = True, vectors=None,
             progress: bool = True) -> pd.DataFrame:
    """A/B behaviour score for every behaviour x layer x multiplier.

    Vectors are built once per behaviour for all layers (from the ``generate`` split) and saved
    beside ``out``; questions come from the ``test`` split. ``vectors`` may map a behaviour to a
    prebuilt vector (any kind, e.g. a sparse one). Returns all rows of ``out`` as a DataFrame.
    """
    behaviors = list(BEHAVIORS) if behaviors in ("all", ["all"]) else list(behaviors)
    for b in behaviors:
        if b not in BEHAVIORS:
            raise ValueError(f"unknown behaviour {b!r}; choose from {', '.join(BEHAVIORS)} or 'all'")
    name = model.cfg.model_name
    done = {_key(r, "behavior") for r in read_rows(out) if "behavior" in r}
    vec_dir = Path(out).with_suffix(".vectors") if out else None
    scorers_se: dict = {}
    todo = [(b, layer, m) for b in behaviors for layer in layers for m in multipliers
            if (name, method, b, int(layer), float(m)) not in done]
    bar = tqdm(total=len(todo), desc=f"{method} A/B sweep", disable=not progress)
    for b in behaviors:
        mine = [(layer, m) for bb, layer, m in todo if bb == b]
        if not mine:
            continue
        if vectors and b in vectors:
            vec = vectors[b]
        elif method == "caa":
            vec = _cached_vector(vec_dir / f"caa_{b}" if vec_dir else None,
                                 lambda: caa_vector(model, load_behavior(b), layers, b, balance=balance,
                                                    progress=progress))
        else:
            raise ValueError(f"no A/B vectors for method {method!r} without `vectors=`; use 'caa'")
        test = load_behavior(b, "test")[:n_test]
        scorer = ABScorer(model, test)
        base = None
        for layer, m in mine:
            t0 = time.time()
            if m == 0 and base is not None:
                res = dict(base)
            else:
                res = scorer.score(vec, m, [layer])
                if m == 0:
                    base = res
            row = {"model": name, "method": method, "behavior": b, "layer": int(layer), "multiplier": float(m),
                   **res}
            if with_side_effects:
                row.update(side_effects(model, vec, m, [layer], scorers=scorers_se))
            row["seconds"] = time.time() - t0
            append_row(out, row)
            bar.update()
    bar.close()
    return to_frame(read_rows(out)) if out else None


def task_sweep(model, task: str, methods: Sequence[str], layers: Sequence[int],
               multipliers: dict[str, Sequence[float]] | Sequence[float], out: str | Path | None = None,
               n_prompts: int = 40, max_new_tokens: int = 30, seed: int = 0, vectors=None,
               progress: bool = True) -> pd.DataFrame:
    """Open-ended task score (sentiment, topic) for every method x layer x multiplier; texts are saved
    beside ``out`` (``.texts.jsonl``). ``multipliers`` may differ per method (a dict). Multiplier 0 is
    the unsteered model: it is generated once and its row reused for every method and layer."""
    name = model.cfg.model_name
    rows = [r for r in read_rows(out) if "task" in r and r["task"] == task]
    done = {_key(r, "task") for r in rows}
    zero = next((r for r in rows if r["multiplier"] == 0), None)
    mults = multipliers if isinstance(multipliers, dict) else {m: multipliers for m in methods}
    todo = [(meth, layer, m) for meth in methods for layer in layers for m in mults[meth]
            if (name, meth, task, int(layer), float(m)) not in done]
    texts_path = Path(out).with_suffix(".texts.jsonl") if out else None
    vec_dir = Path(out).with_suffix(".vectors") if out else None
    bar = tqdm(total=len(todo), desc=f"{task} sweep", disable=not progress)
    for meth in methods:
        mine = [(layer, m) for mm, layer, m in todo if mm == meth]
        if not mine:
            continue
        if vectors and meth in vectors:
            vec = vectors[meth]
        else:
            vec = _cached_vector(vec_dir / f"{meth}_{task}" if vec_dir else None,
                                 lambda: task_vector(model, task, meth, layers))
        for layer, m in mine:
            key = {"model": name, "method": meth, "task": task, "layer": int(layer), "multiplier": float(m)}
            if m == 0 and zero is not None:
                append_row(out, {**zero, **key})
                bar.update()
                continue
            res = run_task(model, task, vec, m, [layer], n_prompts, max_new_tokens, seed)
            texts = res.pop("texts")
            row = {**key, **res}
            append_row(texts_path, {**{k: row[k] for k in ("method", "task", "layer", "multiplier")},
                                    "seed": seed, "max_new_tokens": max_new_tokens, "texts": texts})
            append_row(out, row)
            if m == 0:
                zero = row
            bar.update()
    bar.close()
    return to_frame(read_rows(out)) if out else None


