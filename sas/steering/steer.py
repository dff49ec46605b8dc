"""Apply steering vectors through TransformerLens hooks, at chosen layers and positions.

    with steer(model, vector, multipliers=2.0):
        text = sas.generate(model, ["I think that"])

Hooks are temporary: they are removed when the block ends, also when it raises. Positions are
counted over real tokens (BOS is 0), so they are right under left padding and with a KV cache,
as long as the forward passes go through :mod:`sas.forward` (which records the padding and the
cache offset). A plain ``model(tokens)`` call inside the block is treated as one unpadded sequence.
"""

from __future__ import annotations

import contextvars
import warnings
from contextlib import contextmanager
from typing import Callable, Sequence

import torch

from ..checks import int_list, strength
from ..forward.positions import POSITIONS


def _is_vector(v) -> bool:
    return hasattr(v, "hook") and hasattr(v, "layers")  # dense or sparse


def _as_terms(vectors, multipliers) -> list[tuple[object, object]]:
    if _is_vector(vectors):
        vectors = [vectors]
    if isinstance(vectors, (str, bytes, dict)) or not hasattr(vectors, "__iter__"):
        raise TypeError(f"vectors must be a steering vector or a list of them, not {type(vectors).__name__}")
    vectors = list(vectors)
    bad = [v for v in vectors if not _is_vector(v)]
    if bad:
        raise TypeError(f"not a steering vector: {type(bad[0]).__name__}; build one with caa_vector, sas_vector, ...")
    if isinstance(multipliers, (int, float, torch.Tensor)):  # one strength (a tensor: per row) for every vector
        multipliers = [multipliers] * len(vectors)
    elif isinstance(multipliers, (str, bytes)):
        raise TypeError(f"multipliers must be a number or a list of numbers, not the string {multipliers!r}")
    multipliers = [strength(m, "multiplier") for m in multipliers]  # NaN/inf steer nowhere: refused
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
    if positions is not None and positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}")
    # a layer given twice steers once (a repeated layer had added the vector twice: found by tests/test_properties.py)
    use_layers = None if layers is None else list(dict.fromkeys(int_list(layers, "layers")))
    if use_layers == []:
        raise ValueError("layers is empty: nothing would be steered; pass None for all of the vector's layers")
    for vec, mult in _as_terms(vectors, multipliers):
        _check_model(model, vec)
        for layer in vec.layers if use_layers is None else use_layers:
            if layer not in vec.layers:
                raise ValueError(f"the {vec.method} vector has no direction for layer {layer}; it has {vec.layers}")
            if not 0 <= layer < model.cfg.n_layers:
                raise ValueError(f"layer {layer} is out of range for {model.cfg.model_name} "
                                 f"({model.cfg.n_layers} layers: 0..{model.cfg.n_layers - 1})")
            d = vec.codes[layer] if hasattr(vec, "codes") else vec.directions[layer]  # sparse: [d_sae]
            if not torch.isfinite(d).all():  # edited in place after construction, which checked it
                raise ValueError(f"the {vec.method} vector has NaN or inf entries at layer {layer} (changed after it "
                                 "was built?); rebuild it")
            pos = positions or vec.positions
            if pos == "front" and d.ndim != 2:
                raise ValueError("positions='front' adds row i of a position-aligned vector [n_pos, d_model] at the "
                                 "i-th token (ActAdd); this vector has one direction: use 'all' or 'after_prompt'")
            hooks.append((vec.hook_name(layer), vec.hook(layer, mult, pos)))
    missing = [name for name, _ in hooks if name not in model.hook_dict]
    if missing:
        raise ValueError(f"{model.cfg.model_name} has no hook point {missing[0]!r}")
    return hooks


def _check_model(model, vec) -> None:
    if vec.d_model != model.cfg.d_model:
        made = (f"it was made for {vec.model}" if vec.model and vec.model != model.cfg.model_name else
                "it was made for another model" + (f" (its file names {vec.model}, which the width contradicts)"
                                                   if vec.model else ""))
        raise ValueError(f"the vector has width {vec.d_model} but {model.cfg.model_name} has d_model "
                         f"{model.cfg.d_model}: {made}; rebuild it for this model")
    if vec.model and vec.model != model.cfg.model_name:
        warnings.warn(f"steering {model.cfg.model_name} with a vector made for {vec.model} (same width, "
                      "but another model's residual stream); rebuild it for this model")


# The steer() blocks active in the current thread (or asyncio task). TransformerLens hooks live on the shared model,
# so each steering hook checks that its own block is active here: another thread's forward passes are not steered.
_ACTIVE: contextvars.ContextVar[frozenset] = contextvars.ContextVar("sas_steering", default=frozenset())


def _only_here(fn: Callable, key: object) -> Callable:
    def hook(resid, hook=None):
        return fn(resid, hook=hook) if key in _ACTIVE.get() else resid

    return hook


@contextmanager
def steer(model, vectors, multipliers=1.0, layers: Sequence[int] | None = None, positions: str | None = None):
    """Context manager: steer ``model`` with ``vectors`` x ``multipliers`` inside the block.

    See :func:`steering_hooks` for the arguments. The hooks are removed on exit, also after an error.
    Steering is per thread: forward passes that another thread (or asyncio task) runs on the same model while
    this block is open are not steered, and leaving a block removes only its own hooks (TransformerLens's
    ``model.hooks`` removes hooks by nesting level, which threads share, so it is not used here). Hooks you add
    yourself with ``model.hooks`` stay global to the model.
    """
    hooks = steering_hooks(model, vectors, multipliers, layers, positions)
    key = object()
    added = []
    token = _ACTIVE.set(_ACTIVE.get() | {key})
    try:
        for name, fn in hooks:
            point, gated = model.hook_dict[name], _only_here(fn, key)
            point.add_hook(gated, dir="fwd")
            added.append((point, next(h for h in point.fwd_hooks if h.user_hook is gated)))
        yield model
    finally:
        for point, handle in added:
            handle.hook.remove()
            point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]
        _ACTIVE.reset(token)
