"""Sparse vectors with the other selection rules and edits, next to the paper's SAS (``sas``, unchanged):

- ``sas_diff``: shared features kept at their mean difference (``shared="diff"``) instead of dropped;
- ``sas_os``: that candidate set filtered by output score (Arad et al. 2025), the features that move the output;
- ``sas_clamp``: the top features of ``sas_os`` clamped to ``strength x`` their typical active value instead of
  added to.

All are :func:`build_selected` with other defaults; every setting is recorded in the vector's ``settings``.
"""

from __future__ import annotations

import warnings

import torch

from ..activations.codes import encode
from ..load.saes import sae_name
from ..steering.sparse import EDITS, SparseVector
from .registry import register
from .select import NoFeatures, select_features

OS_THRESHOLD = 0.01  # the output score below which a feature barely moves the output (module sas_os)


def _typical(model, sae, v: torch.Tensor, code_pos: torch.Tensor, code_neg: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Clamp targets per unit strength ``[d_sae]``: each chosen feature's mean active value over text
    (:func:`~sas.activations.feature_stats.feature_stats`); a feature never active there (but active on its side
    of the contrast, or it would not be chosen) takes its mean active value on that side instead."""
    from ..activations.feature_stats import feature_stats

    st = feature_stats(model, sae)
    typ = st.typical().clone().float()
    support = v.nonzero()[:, 0]
    side = torch.where(v[support] > 0, 0, 1)
    missing = [int(f) for f, s in zip(support, side) if not typ[f] > 0]
    for f in missing:
        c = (code_pos if v[f] > 0 else code_neg)[:, f]
        typ[f] = c[c > 0].mean() if (c > 0).any() else 0.0
    return typ * (v != 0), {"typical_from": "feature_stats mean active value", "n_positions": st.n_positions,
                            "n_typical_from_contrast": len(missing)}


def build_selected(model, contrast, layers, saes, positions: str = "after_prompt", method: str = "sas_diff",
                   tau: float = 0.1, mean: str = "all", shared: str = "diff", min_output_score: float | None = None,
                   top_k: int | None = None, rank_by: str = "diff", edit: str = "add",
                   feature_score=None) -> SparseVector:
    """A sparse vector from ``contrast`` at ``layers`` with the selection rules of :mod:`sas.methods.select` and the
    ``edit`` (``"add"`` or ``"clamp"``). A layer with no feature left is left out with a warning naming the rule
    that removed them; no layer left is :class:`NoFeatures`. ``feature_score(model, sae) -> [d_sae]``: the
    per-feature score that ``min_output_score`` and ``rank_by="output_score"`` use (default: the output score)."""
    if edit not in EDITS:
        raise ValueError(f"edit must be one of {EDITS}, not {edit!r}")
    needs_os = min_output_score is not None or rank_by in ("output_score", "diff_x_output")
    pos, neg = contrast.activations(model, layers)
    codes, typical, infos, skipped = {}, {}, {}, {}
    for x in layers:
        if x not in (saes or {}):
            raise ValueError(f"no SAE for layer {x}: {method} needs one per layer ({sorted(saes or {})} given)")
        sae = saes[x]
        os_ = None
        if needs_os:
            from ..steering.output_scores import output_scores

            os_ = (feature_score or output_scores)(model, sae)
        zp, zn = encode(sae, pos[x]), encode(sae, neg[x])
        try:
            v, info = select_features(zp, zn, tau, mean, shared, os_, min_output_score, top_k, rank_by)
        except NoFeatures as e:
            skipped[x] = str(e)
            warnings.warn(f"{contrast.name}, layer {x}: no {method} vector ({e})")
            continue
        if os_ is not None:
            kept = os_[v != 0]
            info["output_score_kept"] = {"min": kept.min().item(), "median": kept.median().item()}
        if edit == "clamp":
            typical[x], extra = _typical(model, sae, v, zp, zn)
            info.update(extra)
        codes[x], infos[x] = v, info
    if not codes:
        raise NoFeatures("; ".join(f"layer {x}: {e}" for x, e in skipped.items()))
    settings = {"tau": tau, "mean": mean, "shared": shared, "min_output_score": min_output_score, "top_k": top_k,
                "rank_by": rank_by, "edit": edit, "n_pairs": contrast.n_pairs,
                "feature_score": getattr(feature_score, "__name__", "output_scores"), "per_layer": infos, "skipped": skipped}
    return SparseVector(codes, {x: saes[x] for x in codes}, model.cfg.model_name, contrast.name, method=method,
                        positions=positions, sae_names={x: sae_name(saes[x]) for x in codes},
                        data_hash=contrast.hash, settings=settings, edit=edit, typical=typical)


@register("sas_diff", multipliers=(-8, -4, 0, 4, 8), needs_sae=True)
def build_diff(model, contrast, layers, saes=None, positions="after_prompt", tau: float = 0.1, mean: str = "all",
               top_k: int | None = None) -> SparseVector:
    """SAS with the shared features kept at their mean difference instead of dropped (shared="diff")."""
    return build_selected(model, contrast, layers, saes, positions, "sas_diff", tau, mean, "diff", None, top_k)


@register("sas_os", multipliers=(-8, -4, 0, 4, 8), needs_sae=True)
def build_os(model, contrast, layers, saes=None, positions="after_prompt", tau: float = 0.1, mean: str = "all",
             shared: str = "diff", min_output_score: float = OS_THRESHOLD, top_k: int | None = None,
             rank_by: str = "diff") -> SparseVector:
    """sas_diff's candidates filtered by output score (Arad et al. 2025): only features that move the output."""
    return build_selected(model, contrast, layers, saes, positions, "sas_os", tau, mean, shared, min_output_score,
                          top_k, rank_by)


@register("sas_clamp", multipliers=(-4, -2, 0, 2, 4), needs_sae=True)
def build_clamp(model, contrast, layers, saes=None, positions="after_prompt", tau: float = 0.1, mean: str = "all",
                shared: str = "diff", min_output_score: float | None = OS_THRESHOLD, top_k: int | None = 16,
                rank_by: str = "diff") -> SparseVector:
    """The top features of sas_os clamped to strength x their typical active value (error kept) instead of added."""
    return build_selected(model, contrast, layers, saes, positions, "sas_clamp", tau, mean, shared, min_output_score,
                          top_k, rank_by, "clamp")
