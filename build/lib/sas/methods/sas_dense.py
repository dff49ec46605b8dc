"""SAS-dense: the dense direction of the SAS vector, ``W_dec^T v``, added as a plain vector. It separates the
effect of the sparse edit from that of its direction."""

from __future__ import annotations

from ..steering.vector import SteeringVector
from .registry import register
from .sas import build as sas_build


@register("sas_dense", multipliers=(-8, -4, 0, 4, 8), needs_sae=True)
def build(model, contrast, layers, saes=None, positions="after_prompt", tau: float = 0.1, mean: str = "all",
          top_k: int | None = None) -> SteeringVector:
    """The SAS vector's decoder direction W_dec^T v, as a dense vector."""
    return sas_build(model, contrast, layers, saes, positions, tau=tau, mean=mean, top_k=top_k).to_dense()
