"""ΔToken Confidence feature selection (Wang, Hu, Wang and Zou, "Does higher interpretability imply better utility?
A pairwise analysis on sparse autoencoders", ICLR 2026): keep the candidate features whose amplification most
raises the model's confidence in its next token (:func:`sas.steering.output_scores.delta_token_confidence`),
instead of those with a high output score (``sas_os``, Arad et al. 2025).

Candidates are ``sas_diff``'s (frequency ``tau`` on either side of the contrast, shared features at their mean
difference); those with ΔToken Confidence below ``min_delta`` are dropped and the ``top_k`` highest kept, each at
its mean difference (the edit adds them, like SAS).
"""

from __future__ import annotations

from ..steering.output_scores import delta_token_confidence
from ..steering.sparse import SparseVector
from .registry import register
from .sas_select import build_selected


@register("sas_dtc", multipliers=(-8, -4, 0, 4, 8), needs_sae=True)
def build(model, contrast, layers, saes=None, positions="after_prompt", tau: float = 0.1, mean: str = "all",
          shared: str = "diff", min_delta: float = 0.0, top_k: int | None = 16) -> SparseVector:
    """sas_diff's candidates ranked by ΔToken Confidence (Wang et al. 2026): the top_k that most sharpen the output."""
    return build_selected(model, contrast, layers, saes, positions, "sas_dtc", tau, mean, shared, min_delta, top_k,
                          "output_score", feature_score=delta_token_confidence)
