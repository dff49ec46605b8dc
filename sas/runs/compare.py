"""Sparse versus dense: CAA, SAS and the dense direction decoded from the SAS vector
(``sas_dense``, which separates the effect of the sparse edit from that of its direction), built
from the same activations and scored with the same data, positions and evaluation."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..activations.codes import encode
from ..activations.residual import answer_activations, last_token_activations
from ..evaluation.ab import ABScorer
from ..evaluation.side_effects import side_effects
from ..evaluation.tasks import TASKS, run_task, sentiment_pairs, topic_pairs
from ..load.data import BEHAVIORS, balance_letters, data_hash, load_behavior
from ..load.saes import sae_name as _sae_name
from ..methods.sas import sparse_diff
from ..reports.tables import to_frame
from ..steering.sparse import SparseVector
from ..steering.vector import SteeringVector
from .store import append_row, read_rows

METHODS = ("caa", "sas", "sas_dense")
# The SAS edit is several times smaller than CAA's at the same multiplier (the sparse vector keeps
# tens to hundreds of features, and the SAE's reconstruction error is kept): on gemma-3-270m
# sentiment its mean residual change per unit multiplier is 125 at layer 9 against CAA's 1,056.
# So the sparse methods get a wider default range; compare at matched shift, not matched multiplier.
DEFAULT_MULTIPLIERS = {"caa": [-2.0, -1.0, 0.0, 1.0, 2.0], "sas": [-8.0, -4.0, 0.0, 4.0, 8.0],
                       "sas_dense": [-8.0, -4.0, 0.0, 4.0, 8.0]}


def build_vectors(model, saes: dict[int, object], pos: dict, neg: dict, behavior: str, dhash: str,
                  tau: float = 0.1, mean: str = "all", top_k: int | None = None,
                  positions: str = "after_prompt") -> dict[int, dict[str, object]]:
    """Per layer, the three vectors from matching/non-matching activations ``{layer: [n, d_model]}``."""
    out = {}
    for layer, sae in saes.items():
        caa = SteeringVector({layer: pos[layer].mean(0) - neg[layer].mean(0)}, model.cfg.model_name, "caa",
                             behavior, positions=positions, data_hash=dhash)
        try:
            v, info = sparse_diff(encode(sae, pos[layer]), encode(sae, neg[layer]), tau, mean, top_k)
        except ValueError as e:  # no one-sided feature: CAA still runs, the sparse methods are skipped
            warnings.warn(f"{behavior}, layer {layer}: no SAS vector, so no sas/sas_dense rows ({e})")
            out[layer] = {"caa": caa, "sas": None, "sas_dense": None}
            continue
        sv = SparseVector({layer: v}, {layer: sae}, model.cfg.model_name, behavior, positions=positions,
                          sae_names={layer: _sae_name(sae)}, data_hash=dhash,
                          settings={"tau": tau, "mean": mean, "top_k": top_k, **info})
        out[layer] = {"caa": caa, "sas": sv, "sas_dense": sv.to_dense()}
    return out


@torch.no_grad()
def residual_change(model, vec, multiplier: float, layer: int, acts: torch.Tensor) -> float:
    """Mean norm of the edit the vector makes to the residual rows ``acts [n, d_model]``."""
    if isinstance(vec, SparseVector):
        hook = vec.sparse_hook(layer, multiplier, "all")
        return (hook(acts[None]) - acts[None]).norm(dim=-1).mean().item()
    return abs(multiplier) * vec.directions[layer].norm().item()


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=0).item()


def compare(model, saes: dict[int, object], behaviors: Sequence[str] = (), task: str | None = None,
            multipliers: dict[str, Sequence[float]] | Sequence[float] | None = None,
            out: str | Path | None = None, tau: float = 0.1, mean: str = "all", top_k: int | None = None,
            n_test: int | None = None, n_prompts: int = 40, max_new_tokens: int = 30, seed: int = 0,
            with_side_effects: bool = False, progress: bool = True) -> pd.DataFrame:
    """Run CAA, SAS and SAS-dense at each layer in ``saes`` ({layer: SAE}) on A/B ``behaviors`` or
    an open-ended ``task``; one JSONL row per method x layer x multiplier (resumable). Rows carry
    ``n_features``, ``resid_change`` (mean norm of the edit) and ``cos_caa`` (SAS direction vs CAA).
    ``multipliers``: one list for every method, or {method: list}; default :data:`DEFAULT_MULTIPLIERS`.
    Multiplier 0 is the unsteered model: it is evaluated once per behaviour/task and reused."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    if multipliers is None:
        multipliers = DEFAULT_MULTIPLIERS
    mults = {**DEFAULT_MULTIPLIERS, **multipliers} if isinstance(multipliers, dict) \
        else {m: list(multipliers) for m in METHODS}
    what, items = ("task", [task]) if task else ("behavior", list(behaviors))
    for b in ([] if task else items):
        if b not in BEHAVIORS:
            raise ValueError(f"unknown behaviour {b!r}; choose from {', '.join(BEHAVIORS)}")
    name = model.cfg.model_name
    rows = [r for r in read_rows(out) if what in r]
    done = {(r["method"], r[what], r["layer"], r["multiplier"]) for r in rows}
    unsteered = {r[what]: r for r in rows if r["multiplier"] == 0}  # the same for every method and layer
    layers = sorted(saes)
    scorers_se: dict = {}
    bar = tqdm(total=len(items) * len(layers) * sum(len(mults[m]) for m in METHODS), desc="compare",
               disable=not progress)
    for item in items:
        if task:
            p_txt, n_txt = sentiment_pairs() if task == "sentiment" else topic_pairs()
            pos = last_token_activations(model, p_txt, layers)
            neg = last_token_activations(model, n_txt, layers)
            dhash = data_hash(list(zip(p_txt, n_txt)))
        else:
            pairs = balance_letters(load_behavior(item))
            pos, neg = answer_activations(model, pairs, layers, progress=progress)
            dhash = data_hash(pairs)
            scorer = ABScorer(model, load_behavior(item, "test")[:n_test])
        vecs = build_vectors(model, saes, pos, neg, item, dhash, tau, mean, top_k)
        for layer in layers:
            v = vecs[layer]
            cos = _cos(v["sas_dense"].directions[layer], v["caa"].directions[layer]) if v["sas"] else None
            acts = torch.cat([pos[layer], neg[layer]])
            for meth in METHODS:
                for m in mults[meth]:
                    if (meth, item, layer, float(m)) in done or v[meth] is None:
                        bar.update()
                        continue
                    t0 = time.time()
                    vec = v[meth]
                    if m == 0 and item in unsteered:
                        keep = ("model", "method", what, "layer", "multiplier", "n_features", "resid_change",
                                "cos_caa", "sae", "tau", "mean", "top_k", "seconds")
                        res = {k: x for k, x in unsteered[item].items() if k not in keep}
                    elif task:
                        res = run_task(model, task, vec, m, [layer], n_prompts, max_new_tokens, seed)
                        if out:  # the continuations, to read what steering did (as task sweeps keep them)
                            append_row(Path(out).with_suffix(".texts.jsonl"), {
                                "method": meth, "task": item, "layer": layer, "multiplier": float(m), "seed": seed,
                                "max_new_tokens": max_new_tokens, "texts": res["texts"]})
                        res.pop("texts")
                    else:
                        res = scorer.score(vec, m, [layer])
                    row = {"model": name, "method": meth, what: item, "layer": layer, "multiplier": float(m), **res,
                           "n_features": int(v["sas"].n_features()[layer]) if meth != "caa" and v["sas"] else None,
                           "resid_change": residual_change(model, vec, m, layer, acts), "cos_caa": cos,
                           "sae": _sae_name(saes[layer]), "tau": tau, "mean": mean, "top_k": top_k}
                    if with_side_effects and not (m == 0 and item in unsteered):
                        row.update(side_effects(model, vec, m, [layer], scorers=scorers_se))
                    row["seconds"] = time.time() - t0
                    append_row(out, row)
                    if m == 0:
                        unsteered.setdefault(item, row)
                    bar.update()
    bar.close()
    return to_frame(read_rows(out)) if out else None


