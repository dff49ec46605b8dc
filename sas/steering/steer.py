"""Apply steering vectors through TransformerLens hooks, at chosen layers and positions.

    with steer(model, vector, multipliers=2.0):
        text = sas.generate(model, ["I think that"])

Hooks are temporary: they are removed when the block ends, also when it raises. Positions are
counted over real tokens (BOS is 0), so they are right under left padding and with a KV cache,
as long as the forward passes go through :mod:`sas.forward` (which records the padding and the
cache offset). A plain ``model(tokens)`` call inside the block is treated as one unpadded sequence.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Callable, Sequence

import torch



def _as_terms(vectors, multipliers) -> list[tuple[object, object]]:
    if hasattr(vectors, "hook") and hasattr(vectors, "layers"):  # one vector, dense or sparse
        vectors = [vectors]
    if isinstance(multipliers, (int, float)) or (isinstance(multipliers, torch.Tensor) and multipliers.ndim <= 1
                                                  and len(vectors) == 1):
        multipliers = [multipliers] * len(vectors)
    if len(multipliers) != len(vectors):
        raise ValueError(f"got {len(vectors)} vectors but {len(multipliers)} multipliers")
    return list(zip(vectors, multipliers))


def steering_hooks(model, vectors, multipliers=1.0, layers: Sequence[int] | None = None,
                   positions: str | None = None) -> list[tuple[str, Callable]]:
    """``(hook_name, fn)`` pairs for ``model.run_with_hooks(tokens, fwd_hooks=...)`` or ``model.hooks``.

    ``vectors``: one vector or a list (dense :class:`SteeringVector` or sparse vectors), ``multipliers``:
    one number or one per vector (each a number, or a 1-D tensor with one strength per batch row), ``layers``: a subset of each vector's layers (default all),
    ``positions``: ``all``, ``after_prompt`` or ``front`` (default: each vector's own).
    """
    hooks = []
    for vec, mult in _as_terms(vectors, multipliers):
        _check_model(model, vec)
        use = vec.layers if layers is None else list(layers)
        for layer in use:
            if layer not in vec.layers:
                raise ValueError(f"the {vec.method} vector has no direction for layer {layer}; it has {vec.layers}")
            if not 0 <= layer < model.cfg.n_layers:
                raise ValueError(f"layer {layer} is out of range for {model.cfg.model_name} "
                                 f"({model.cfg.n_layers} layers: 0..{model.cfg.n_layers - 1})")
            pos = positions or vec.positions
            hooks.append((vec.hook_name(layer), vec.hook(layer, mult, pos)))
    return hooks


def _check_model(model, vec) -> None:
    if vec.d_model != model.cfg.d_model:
        raise ValueError(f"the vector has width {vec.d_model} but {model.cfg.model_name} has d_model "
                         f"{model.cfg.d_model}: it was made for {vec.model}; rebuild it for this model")
    if vec.model and vec.model != model.cfg.model_name:
        warnings.warn(f"steering {model.cfg.model_name} with a vector made for {vec.model} (same width, "
                      "but another model's residual stream); rebuild it for this model")


@contextmanager
def steer(model, vectors, multipliers=1.0, layers: Sequence[int] | None = None, positions: str | None = None):
    """Context manager: steer ``model`` with ``vectors`` x ``multipliers`` inside the block.

    See :func:`steering_hooks` for the arguments. The hooks are removed on exit, also after an error.
    """
    hooks = steering_hooks(model, vectors, multipliers, layers, positions)
    with model.hooks(fwd_hooks=hooks):
        yield model
