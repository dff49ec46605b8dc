"""Writes into the residual stream that are not steering vectors: an activation replaced by a function of itself
(an SAE's reconstruction spliced in, a zero ablation) and one direction per batch row added at the last position
(a feature amplified, for output scores). Built here, like every other write into the residual stream; temporary
and per thread, as :func:`~sas.steering.steer` hooks are."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch

from .steer import hooked


@contextmanager
def replaced(model, hook_name: str, replace: Callable[[torch.Tensor], torch.Tensor]):
    """Context manager: inside the block, the activation at ``hook_name`` is replaced by ``replace(act)`` at every
    position but the first (BOS, whose residual is an outlier): ``act [batch, pos - 1, d]`` in, the same shape out."""
    def hook(act, hook=None):
        act[:, 1:] = replace(act[:, 1:]).to(act.device, act.dtype)
        return act

    with hooked(model, [(hook_name, hook)]):
        yield model


@contextmanager
def added_at_last(model, hook_name: str, directions: torch.Tensor):
    """Context manager: inside the block, row ``i`` of every batch gets ``directions[i]`` (``[batch, d]``) added to
    its activation at ``hook_name`` at its last position."""
    def hook(act, hook=None):
        act = act.clone()
        act[:, -1] += directions.to(act.device, act.dtype)
        return act

    with hooked(model, [(hook_name, hook)]):
        yield model
