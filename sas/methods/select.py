"""Which SAE features a sparse vector keeps: the selection rules, each a setting, applied in this order.

1. **Frequency (SAS, Bayat et al. 2025).** A feature is kept on a side if it fires on at least a fraction ``tau``
   of that side's rows; one-sided features get the mean code of their side (positive minus negative).
2. **Shared features.** ``shared="drop"`` (the paper's) drops the features kept on both sides; ``shared="diff"``
   keeps them at their mean difference ``mean_pos - mean_neg``.
3. **Output score (Arad et al. 2025).** ``min_output_score`` drops candidates whose output score
   (:mod:`sas.steering.output_scores`) is below it.
4. **Top k.** ``top_k`` keeps the ``k`` best candidates by ``rank_by``: ``"diff"`` (|v|, the paper's),
   ``"output_score"``, or ``"diff_x_output"`` (|v| x output score).

:func:`select_features` returns the vector and what each rule kept and removed; when nothing is left,
:class:`NoFeatures` says which rule removed what.
"""

from __future__ import annotations

import torch

MEANS = ("all", "active")
SHARED = ("drop", "diff")
RANK_BY = ("diff", "output_score", "diff_x_output")


class NoFeatures(ValueError):
    """The selection rule left no feature."""


def _check(tau, mean, shared, min_output_score, top_k, rank_by, output_scores, d_sae) -> None:
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau is a firing frequency and must be in [0, 1], not {tau}")
    if mean not in MEANS:
        raise ValueError(f"mean must be one of {MEANS}, not {mean!r}")
    if shared not in SHARED:
        raise ValueError(f"shared must be one of {SHARED} (drop the features active on both sides, or keep them at "
                         f"their mean difference), not {shared!r}")
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {RANK_BY}, not {rank_by!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, not {top_k!r}")
    needs = min_output_score is not None or rank_by in ("output_score", "diff_x_output")
    if needs and output_scores is None:
        raise ValueError("this selection uses output scores: pass output_scores [d_sae] "
                         "(sas.steering.output_scores.output_scores(model, sae))")
    if output_scores is not None and output_scores.shape != (d_sae,):
        raise ValueError(f"output_scores has shape {tuple(output_scores.shape)}, the SAE has {d_sae} features")


@torch.no_grad()
def select_features(code_pos: torch.Tensor, code_neg: torch.Tensor, tau: float = 0.1, mean: str = "all",
                    shared: str = "drop", output_scores: torch.Tensor | None = None,
                    min_output_score: float | None = None, top_k: int | None = None,
                    rank_by: str = "diff") -> tuple[torch.Tensor, dict]:
    """The selection rules (module docstring) on codes ``[n_pos, d_sae]`` and ``[n_neg, d_sae]``.

    Returns ``(v [d_sae], info)``; ``info`` counts what each rule kept and removed (``n_kept_pos``,
    ``n_kept_neg``, ``n_both``, ``n_shared_kept``, ``n_candidates``, ``n_removed_output_score``,
    ``n_removed_top_k``, ``n_features``). Raises :class:`NoFeatures` if no feature is left.
    """
    d_sae = code_pos.shape[-1]
    _check(tau, mean, shared, min_output_score, top_k, rank_by, output_scores, d_sae)
    fp, fn = (code_pos > 0).float().mean(0), (code_neg > 0).float().mean(0)
    kp, kn = (fp > 0, fn > 0) if tau == 0 else (fp >= tau, fn >= tau)
    both = kp & kn

    def avg(c):
        if mean == "all":
            return c.mean(0)
        return c.sum(0) / (c > 0).float().sum(0).clamp(min=1)

    mp, mn = avg(code_pos), avg(code_neg)
    v = mp * (kp & ~both) - mn * (kn & ~both)
    if shared == "diff":
        v = torch.where(both, mp - mn, v)
    info = {"n_kept_pos": int(kp.sum()), "n_kept_neg": int(kn.sum()), "n_both": int(both.sum()),
            "n_shared_kept": int(((v != 0) & both).sum()), "n_candidates": int((v != 0).sum())}
    removed_os = 0
    if min_output_score is not None:
        low = (v != 0) & (output_scores.to(v.device) < min_output_score)
        removed_os = int(low.sum())
        v = torch.where(low, torch.zeros_like(v), v)
    removed_k = 0
    n_left = int((v != 0).sum())
    if top_k is not None and top_k < n_left:
        os_ = output_scores.to(v.device).float() if output_scores is not None else None
        score = {"diff": lambda: v.abs(), "output_score": lambda: os_, "diff_x_output": lambda: v.abs() * os_}[rank_by]()
        score = torch.where(v != 0, score, torch.full_like(score, -float("inf")))
        keep = score.topk(top_k).indices
        v = torch.zeros_like(v).index_copy(0, keep, v[keep])
        removed_k = n_left - top_k
    info.update(n_removed_output_score=removed_os, n_removed_top_k=removed_k, n_features=int((v != 0).sum()))
    if info["n_features"] == 0:
        raise NoFeatures(explain_empty(info, tau, shared, min_output_score))
    return v, info


def explain_empty(info: dict, tau: float, shared: str, min_output_score: float | None) -> str:
    """Which rule removed what, for a selection that left no feature."""
    parts = [f"tau={tau}: {info['n_kept_pos']} features fire on >= tau of the positive rows, {info['n_kept_neg']} "
             f"of the negative"]
    if shared == "drop":
        parts.append(f"shared='drop' removed the {info['n_both']} kept on both sides")
    else:
        parts.append(f"shared='diff' kept {info['n_shared_kept']} of the {info['n_both']} on both sides "
                     "(the others have no mean difference)")
    if min_output_score is not None:
        parts.append(f"min_output_score={min_output_score} removed {info['n_removed_output_score']} of the "
                     f"{info['n_candidates']} candidates")
    fix = "lower tau" + (", use shared='diff'" if shared == "drop" else "") + \
          (" or lower min_output_score" if min_output_score is not None else "")
    return "no features left after filtering (" + "; ".join(parts) + f"); {fix}"
