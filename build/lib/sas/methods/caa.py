"""Contrastive Activation Addition (Rimsky et al. 2024): the mean difference of residual
activations at the answer letter, between the behaviour-matching and the non-matching answer."""

from __future__ import annotations

from typing import Sequence

from ..activations.residual import answer_activations, last_token_activations
from ..checks import text_pairs
from ..load.data import ABPair, as_pairs, balance_letters, data_hash
from ..steering.vector import SteeringVector
from .registry import register


def caa_vector(model, pairs: list[ABPair], layers: Sequence[int], behavior: str = "custom",
               balance: bool = True, seed: int = 0, batch_size: int = 16, progress: bool = True) -> SteeringVector:
    """A CAA vector for ``layers`` from A/B ``pairs`` (letter-balanced by default).

    Returns a :class:`SteeringVector` whose ``directions[layer]`` is ``[d_model]``, added at
    ``after_prompt`` positions by default, as in CAA.
    """
    pairs = as_pairs(pairs)
    used = balance_letters(pairs, seed) if balance else pairs
    pos, neg = answer_activations(model, used, layers, batch_size, progress)
    dirs = {x: (pos[x].mean(0) - neg[x].mean(0)) for x in pos}
    n_a = sum(p.matching == "A" for p in used)
    return SteeringVector(dirs, model.cfg.model_name, "caa", behavior, positions="after_prompt",
                          data_hash=data_hash(used),
                          settings={"n_pairs": len(used), "n_matching_A": n_a, "balanced": balance, "seed": seed,
                                    "token": "answer letter"})


def contrastive_vector(model, positive: list[str], negative: list[str], layers: Sequence[int],
                       behavior: str = "custom", reduce: str = "last", positions: str = "all") -> SteeringVector:
    """CAA from free-text contrastive pairs (e.g. "The movie was wonderful" / "... awful"):
    mean activation difference at the last token (or averaged over tokens)."""
    positive, negative = text_pairs(positive, negative)
    same = [p for p, n in zip(positive, negative) if p == n]
    if same:
        raise ValueError(f"{len(same)} pair(s) have the same text on both sides, e.g. {same[0]!r}")
    pa = last_token_activations(model, positive, layers, reduce=reduce)
    na = last_token_activations(model, negative, layers, reduce=reduce)
    dirs = {x: pa[x].mean(0) - na[x].mean(0) for x in pa}
    return SteeringVector(dirs, model.cfg.model_name, "caa", behavior, positions=positions,
                          data_hash=data_hash(list(zip(positive, negative))),
                          settings={"n_pairs": len(positive), "reduce": reduce})


@register("caa", multipliers=(-2, -1, 0, 1, 2))
def build(model, contrast, layers, saes=None, positions="after_prompt") -> SteeringVector:
    """Contrastive Activation Addition: the mean activation difference of the contrastive pairs."""
    pos, neg = contrast.activations(model, layers)
    return SteeringVector({x: pos[x].mean(0) - neg[x].mean(0) for x in layers}, model.cfg.model_name, "caa",
                          contrast.name, positions=positions, data_hash=contrast.hash,
                          settings={"n_pairs": contrast.n_pairs, "token": "answer letter" if contrast.kind == "ab"
                                    else "last token"})
