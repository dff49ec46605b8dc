"""Activation Addition (Turner et al. 2023): the position-aligned difference of one prompt pair
(e.g. "Love" - "Hate"), added at the first positions of a new prompt."""

from __future__ import annotations

from typing import Sequence

import torch

from ..activations.residual import _check_layers
from ..forward.run import encode, read_hooks
from ..hooks import resid_hook
from ..load.device import block_device
from ..load.data import data_hash
from ..steering.vector import SteeringVector
from .registry import register


@torch.inference_mode()
def actadd_vector(model, positive: str = "Love", negative: str = "Hate", layers: Sequence[int] = (6,),
                  behavior: str = "custom") -> SteeringVector:
    """ActAdd vector: ``directions[layer]`` is ``[n_pos, d_model]``, the difference of the two prompts'
    residuals position by position (BOS included, the shorter prompt padded with spaces, as in
    the paper), applied at the ``front`` positions."""
    if positive == negative:
        raise ValueError(f"the two ActAdd prompts are the same ({positive!r}); give two different prompts")
    layers = _check_layers(model, layers)
    a, b = encode(model, [positive, negative])
    space = model.tokenizer(" ", add_special_tokens=False).input_ids
    while len(a) < len(b):
        a += space
    while len(b) < len(a):
        b += space
    names = {resid_hook(x): x for x in layers}
    tokens = torch.tensor([a, b], device=block_device(model))
    store = read_hooks(model, tokens, names, torch.ones_like(tokens), torch.zeros(2, dtype=torch.long,
                                                                                  device=tokens.device))
    dirs = {x: store[n][0].float() - store[n][1].float() for n, x in names.items()}
    return SteeringVector(dirs, model.cfg.model_name, "actadd", behavior, positions="front",
                          data_hash=data_hash([positive, negative]),
                          settings={"positive": positive, "negative": negative, "n_pos": len(a)})


@register("actadd", multipliers=(-10, -5, 0, 5, 10))
def build(model, contrast, layers, saes=None, positions="front") -> SteeringVector:
    """Activation Addition: the position-aligned difference of one prompt pair, added at the front positions."""
    if contrast.prompt_pair is None:
        raise ValueError(f"{contrast.name!r} has no ActAdd prompt pair (e.g. 'Love'/'Hate'); ActAdd needs one")
    return actadd_vector(model, *contrast.prompt_pair, layers=layers, behavior=contrast.name)
