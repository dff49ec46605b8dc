"""SAS-ReLU: the paper's SAS vector, edited with a plain ReLU as sigma (``edit="relu"``) instead of the SAE's own
activation. On a TopK SAE the paper's edit re-applies TopK, so the vector's features enter a token's code only by
evicting as many of the token's own features; here they join the code, and only the support changes. It separates
what SAS does on a TopK SAE from what TopK's competition for the k slots does."""

from __future__ import annotations

from dataclasses import replace

from ..steering.sparse import SparseVector
from .registry import register
from .sas import build as sas_build


@register("sas_relu", multipliers=(-8, -4, 0, 4, 8), needs_sae=True)
def build(model, contrast, layers, saes=None, positions="after_prompt", tau: float = 0.1, mean: str = "all",
          top_k: int | None = None) -> SparseVector:
    """The SAS vector with ReLU as sigma: its features join each token's code instead of competing for TopK's slots."""
    vec = sas_build(model, contrast, layers, saes, positions, tau=tau, mean=mean, top_k=top_k)
    return replace(vec, method="sas_relu", edit="relu")
