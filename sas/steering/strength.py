"""One strength scale for every method: the size of the edit a vector makes to the residual stream, relative to
the mean residual norm at that layer.

    acts = layer_activations(model, prompts, vec, layer)  # [n_tokens, d_model], BOS left out
    m = raw_multiplier(vec, layer, acts, 0.2)             # the multiplier whose edit is 0.2 x the mean norm
    with steer(model, vec, m, [layer]): ...

A relative strength of 0.2 is the same size of edit for CAA, ActAdd, SAS or any other method: for a dense
vector it is ``m |v| / mean |a|``; for a sparse (nonlinear) edit the multiplier is found by bisection on the
measured mean edit norm over the tokens; for ActAdd's position-aligned vector it is the mean norm of the rows it
adds (the first, BOS, row left out), since it edits only the first tokens.
"""

from __future__ import annotations

import math

import torch

from ..activations.residual import prompt_activations


@torch.no_grad()
def layer_activations(model, prompts: list[str], vec, layer: int) -> torch.Tensor:
    """Activations of every non-BOS token of ``prompts`` where ``vec`` steers ``layer`` ([n_tokens, d_model])."""
    return prompt_activations(model, prompts, vec.hook_name(layer), last_token_only=False)


@torch.no_grad()
def edit_size(vec, layer: int, multiplier: float, acts: torch.Tensor) -> float:
    """Mean norm of the edit ``multiplier x vec`` makes at ``layer`` over the tokens ``acts`` [n, d_model],
    relative to their mean norm."""
    base = acts.norm(dim=-1).mean().item()
    t = vec.tensor(layer)
    if vec.aligned(layer):  # ActAdd: rows at the first tokens
        rows = t[1:] if t.shape[0] > 1 else t
        return abs(multiplier) * rows.float().norm(dim=-1).mean().item() / base
    a = acts.to(t.device)
    edited = vec.hook(layer, multiplier, "all")(a[None].to(t.dtype if t.is_floating_point() else torch.float32))
    return (edited[0].float() - a.float()).norm(dim=-1).mean().item() / base


MIN_MULTIPLIER = 1e-9  # below this the search stops: the edit does not shrink with the multiplier (a floor)
JUMP = 0.1  # the calibrated edit must lie within 10% of the asked strength


class Unreachable(ValueError):
    """A vector cannot make an edit of the asked relative size at a layer (the message says why and what to do)."""


def raw_multiplier(vec, layer: int, acts: torch.Tensor, relative: float, tol: float = 1e-3,
                   max_multiplier: float = 1e4) -> float:
    """The multiplier of ``vec`` at ``layer`` whose mean edit over ``acts`` is ``relative`` x their mean norm.

    Raises :class:`Unreachable` (a ``ValueError``) if no multiplier up to ``max_multiplier`` makes an edit that large (a vector with no
    effect at this layer), or if even the smallest one is larger (an edit that is not 0 at multiplier 0, or that
    jumps from 0 past the asked size, as a clamp's does: its smallest edit removes the features' activations).
    """
    if not (math.isfinite(relative) and relative >= 0):
        raise ValueError(f"a relative strength must be a finite number >= 0, not {relative!r}")
    if relative == 0:
        return 0.0
    what = f"the {vec.method} vector at layer {layer}"
    lo_size = edit_size(vec, layer, 0.0, acts)
    if lo_size >= relative:
        raise Unreachable(f"{what} edits the residual by {lo_size:.3g} of its norm already at multiplier 0, more than "
                         f"the relative strength {relative}; choose larger strengths")
    one = edit_size(vec, layer, 1.0, acts)
    if vec.linear and one > 0:  # the edit is linear in the multiplier
        return relative / one
    lo, hi = 0.0, 1.0
    while edit_size(vec, layer, hi, acts) < relative:
        lo, hi = hi, hi * 4
        if hi > max_multiplier:
            raise Unreachable(f"{what} never edits the residual by {relative} of its norm (up to multiplier "
                             f"{max_multiplier:g}); it has no effect here: use a lower strength or another layer")
    while hi - lo > tol * hi and hi > MIN_MULTIPLIER:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if edit_size(vec, layer, mid, acts) < relative else (lo, mid)
    mult = (lo + hi) / 2
    got = edit_size(vec, layer, mult, acts)
    if abs(got - relative) > JUMP * relative:  # the edit jumps past the strength: a floor, such as a clamp's
        raise Unreachable(f"{what} never edits the residual by {relative} of its norm: its edit jumps from "
                          f"{edit_size(vec, layer, lo, acts):.3g} (multiplier {lo:.3g}) to "
                          f"{edit_size(vec, layer, hi, acts):.3g} (multiplier {hi:.3g}); its smallest edit is larger "
                          "(clamping features to any value also removes their current activations): choose larger "
                          "strengths")
    return mult
