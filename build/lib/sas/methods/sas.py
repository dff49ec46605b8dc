"""Sparse activation steering (SAS; Bayat et al. 2025): the selection rule and the vector builders."""

from __future__ import annotations

import warnings

import torch

from ..activations.codes import encode
from ..activations.residual import answer_activations, last_token_activations
from ..checks import text_pairs
from ..load.data import ABPair, as_pairs, balance_letters, data_hash
from ..load.saes import check_sae_fits, sae_layer, sae_name
from ..steering.sparse import SparseVector
from .registry import register
from .select import MEANS, NoFeatures, select_features  # noqa: F401 (re-exported)


@torch.no_grad()
def sparse_diff(code_pos: torch.Tensor, code_neg: torch.Tensor, tau: float = 0.1, mean: str = "all",
                top_k: int | None = None) -> tuple[torch.Tensor, dict]:
    """The SAS selection rule on codes ``[n_pos, d_sae]`` and ``[n_neg, d_sae]``.

    Returns ``(v [d_sae], info)``: features with firing frequency >= ``tau`` on one side only;
    ``mean="all"`` averages codes over all rows, ``"active"`` over the rows where the feature fires.
    (:func:`sas.methods.select.select_features` with its defaults; it has the other rules.)
    """
    v, info = select_features(code_pos, code_neg, tau, mean, top_k=top_k)
    return v, {k: info[k] for k in ("n_kept_pos", "n_kept_neg", "n_both", "n_features")}


def sas_vector(model, sae, pairs: list[ABPair], layer: int | None = None, tau: float = 0.1, mean: str = "all",
               top_k: int | None = None, behavior: str = "custom", balance: bool = True, seed: int = 0,
               acts: tuple | None = None, progress: bool = True) -> SparseVector:
    """A SAS vector from A/B ``pairs`` at the SAE's layer, from the answer-letter activations.

    ``acts`` may pass precomputed ``(matching, not_matching)`` activations (as from
    :func:`sas.caa.answer_activations`) to share them with a CAA vector.
    """
    check_sae_fits(sae, model)
    at = sae_layer(sae)
    layer = at if layer is None else layer
    if layer != at:
        raise ValueError(f"the SAE reads layer {at} but layer {layer} was asked for; use an SAE trained at "
                         f"layer {layer}")
    pairs = as_pairs(pairs)
    used = balance_letters(pairs, seed) if balance else pairs
    pos, neg = acts if acts is not None else answer_activations(model, used, [layer], progress=progress)
    v, info = sparse_diff(encode(sae, pos[layer]), encode(sae, neg[layer]), tau, mean, top_k)
    return SparseVector({layer: v}, {layer: sae}, model.cfg.model_name, behavior,
                        sae_names={layer: sae_name(sae)}, data_hash=data_hash(used),
                        settings={"tau": tau, "mean": mean, "top_k": top_k, "n_pairs": len(used),
                                  "balanced": balance, **info})


def sas_vector_from_texts(model, sae, positive: list[str], negative: list[str], tau: float = 0.1,
                          mean: str = "all", top_k: int | None = None, behavior: str = "custom",
                          positions: str = "after_prompt") -> SparseVector:
    """A SAS vector from free-text contrastive pairs, at each text's last token (as ``contrastive_vector``)."""
    positive, negative = text_pairs(positive, negative)
    layer = sae_layer(sae)
    pa = last_token_activations(model, positive, [layer])[layer]
    na = last_token_activations(model, negative, [layer])[layer]
    v, info = sparse_diff(encode(sae, pa), encode(sae, na), tau, mean, top_k)
    return SparseVector({layer: v}, {layer: sae}, model.cfg.model_name, behavior, positions=positions,
                        sae_names={layer: sae_name(sae)}, data_hash=data_hash(list(zip(positive, negative))),
                        settings={"tau": tau, "mean": mean, "top_k": top_k, "n_pairs": len(positive), **info})


@register("sas", multipliers=(-8, -4, 0, 4, 8), needs_sae=True)
def build(model, contrast, layers, saes=None, positions="after_prompt", tau: float = 0.1, mean: str = "all",
          top_k: int | None = None) -> SparseVector:
    """Sparse activation steering: the SAS rule on the SAE codes of the contrastive activations, edited in the
    SAE's sparse space with the reconstruction error kept. A layer with no one-sided feature is left out
    (with a warning); no layer left is a ``ValueError``."""
    pos, neg = contrast.activations(model, layers)
    codes, infos, skipped = {}, {}, {}
    for x in layers:
        if x not in (saes or {}):
            raise ValueError(f"no SAE for layer {x}: SAS needs one per layer ({sorted(saes or {})} given)")
        try:
            codes[x], infos[x] = sparse_diff(encode(saes[x], pos[x]), encode(saes[x], neg[x]), tau, mean, top_k)
        except NoFeatures as e:
            skipped[x] = str(e)
            warnings.warn(f"{contrast.name}, layer {x}: no SAS vector ({e})")
    if not codes:
        raise NoFeatures("; ".join(f"layer {x}: {e}" for x, e in skipped.items()))
    return SparseVector(codes, {x: saes[x] for x in codes}, model.cfg.model_name, contrast.name,
                        positions=positions, sae_names={x: sae_name(saes[x]) for x in codes},
                        data_hash=contrast.hash,
                        settings={"tau": tau, "mean": mean, "top_k": top_k, "n_pairs": contrast.n_pairs,
                                  "per_layer": infos, "skipped": skipped})
