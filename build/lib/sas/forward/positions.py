"""Where the tokens of a forward pass sit (padding, KV-cache offset, end of prompt), so that steering hooks
steer the right positions under left padding and with a cache."""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass

import torch

POSITIONS = ("all", "after_prompt", "front")


@dataclass
class Batch:
    """Where the tokens of the current forward pass sit: ``left_pad`` [batch] pad tokens on the left,
    ``offset`` tokens already in the KV cache, ``prompt_end`` [batch] first real-token position
    that ``after_prompt`` steers (None: the last prompt token, so the first generated token is steered)."""

    left_pad: torch.Tensor
    offset: int = 0
    prompt_end: torch.Tensor | None = None


_BATCH: contextvars.ContextVar[Batch | None] = contextvars.ContextVar("sas_batch", default=None)


@contextmanager
def batch_positions(batch: Batch):
    """Tell steering hooks where the tokens of the enclosed forward passes sit."""
    token = _BATCH.set(batch)
    try:
        yield batch
    finally:
        _BATCH.reset(token)


def _real_positions(n_batch: int, n_pos: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[batch, pos] index of each token among the real tokens of its row (negative for padding)."""
    b = _BATCH.get()
    pos = torch.arange(n_pos, device=device)[None, :].expand(n_batch, n_pos)
    if b is None:
        return pos, None
    return pos + b.offset - b.left_pad.to(device)[:, None], b.prompt_end


def position_mask(positions: str, n_batch: int, n_pos: int, device) -> torch.Tensor:
    """[batch, pos] bool: which tokens of the current pass ``positions`` steers (``all``/``after_prompt``)."""
    real, prompt_end = _real_positions(n_batch, n_pos, device)
    if positions == "all":
        return real >= 0
    if positions == "after_prompt":
        if prompt_end is None:
            # one pass over a whole prompt: steer its last token, which predicts the first new token
            b = _BATCH.get()
            if b is None or b.offset == 0:
                last = real.max(dim=1, keepdim=True).values
                return real >= last
            return real >= 0  # a generation step: every new token is after the prompt
        return real >= prompt_end.to(device)[:, None]
    raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}")


def row_strengths(strength, n_batch: int, device, dtype) -> torch.Tensor:
    """``strength`` (a number, or a 1-D tensor of one strength per row of the batch) as ``[batch, 1, 1]``.

    Per-row strengths let one batched forward pass run several steering strengths (or a server run
    requests with different steering) at once.
    """
    s = torch.as_tensor(strength, dtype=dtype, device=device)
    if s.ndim == 0:
        return s.expand(n_batch)[:, None, None]
    if s.shape != (n_batch,):
        raise ValueError(f"per-row strengths must have one value per row: got shape {tuple(s.shape)} for a batch "
                         f"of {n_batch}")
    return s[:, None, None]

