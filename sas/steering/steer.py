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
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..checks import int_list, strength
from ..forward.positions import POSITIONS
from ..hooks import layer_of
from .kinds import Vector


def _is_vector(v) -> bool:
    return isinstance(v, Vector)


@dataclass
class Term:
    """One steering term: ``vector`` x ``strength`` (a number, or a 1-D tensor of one strength per batch row) at
    ``layers`` (None: all of the vector's) and ``positions`` (None: the vector's own)."""

    vector: Vector
    strength: float | torch.Tensor
    layers: list[int] | None = None
    positions: str | None = None
    condition: object = None  # a sas.steering.condition.Condition: edit only where it holds


class NoEdit(ValueError):
    """A steered run whose receipt shows that no position was edited: steering was a silent no-op."""


class Receipt:
    """What steering actually did, measured in the hooks: per layer, how many positions were edited and the mean
    norm of the edit applied there relative to the residual's norm.

    Edits are counted per batch row when ``rows`` is given (a fixed batch, as the server runs: :meth:`row`),
    else per strength (several strengths may share a batch, one per row: :meth:`layers` with ``strength``)."""

    def __init__(self, rows: int | None = None):
        self.rows = rows
        self._sums: dict[tuple[int, float], list[float]] = {}  # (layer, row or strength) -> [positions, sum of rel]

    @torch.no_grad()
    def record(self, layer: int, resid: torch.Tensor, out: torch.Tensor, strengths: torch.Tensor) -> None:
        """Record the edit ``out - resid`` ([batch, pos, d_model]) made at ``layer`` with per-row ``strengths``."""
        edit = (out - resid).float().norm(dim=-1)  # [batch, pos]
        rel = torch.where(edit > 0, edit / resid.float().norm(dim=-1).clamp(min=1e-30), 0.0)
        count, total = (edit > 0).sum(1).tolist(), rel.sum(1).tolist()
        labels = range(len(count)) if self.rows is not None else strengths.tolist()
        for label, n, r in zip(labels, count, total):
            entry = self._sums.setdefault((layer, float(label)), [0, 0.0])
            entry[0] += n
            entry[1] += r

    def layers(self, strength: float | None = None) -> dict[str, dict]:
        """``{"layer": {"positions": int, "edit_norm": float}}`` (string keys, as in JSON rows) of everything
        recorded, or of the rows steered with ``strength``."""
        keep = {k: v for k, v in self._sums.items()
                if strength is None or math.isclose(k[1], strength, rel_tol=1e-6, abs_tol=1e-12)}
        return self._summary(keep)

    def row(self, i: int) -> dict[str, dict]:
        """The same for batch row ``i`` (needs ``rows``)."""
        return self._summary({k: v for k, v in self._sums.items() if k[1] == i})

    @staticmethod
    def _summary(sums: dict) -> dict[str, dict]:
        out: dict[int, list] = {}
        for (layer, _), (n, r) in sorted(sums.items()):
            acc = out.setdefault(layer, [0, 0.0])
            acc[0] += n
            acc[1] += r
        return {str(x): {"positions": n, "edit_norm": r / n if n else 0.0} for x, (n, r) in out.items()}

    def check(self, what: str, strength: float | None = None) -> dict[str, dict]:
        """:meth:`layers`, or :class:`NoEdit` naming ``what`` if no position was edited."""
        got = self.layers(strength)
        if not any(v["positions"] for v in got.values()):
            raise NoEdit(f"{what}: steering edited no position (hooked layers: {sorted(got) or 'none'}; the residual "
                         "came out unchanged). Check the layers, the positions and the multiplier, and whether the "
                         "vector has any effect in this model's dtype")
        return got


# the receipt that steer() blocks opened inside recording() record into
_RECEIPT: contextvars.ContextVar[Receipt | None] = contextvars.ContextVar("sas_receipt", default=None)


@contextmanager
def recording():
    """Context manager: every steering block opened inside it records its edits in the :class:`Receipt` it yields
    (unless given its own)."""
    receipt = Receipt()
    token = _RECEIPT.set(receipt)
    try:
        yield receipt
    finally:
        _RECEIPT.reset(token)


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


class SteeringError(ValueError):
    """A steering term that does not fit the model; ``field`` names the part at fault (``vector``, ``strength``,
    ``layers`` or ``positions``) and ``code`` says what is wrong, for callers that report it (the server)."""

    def __init__(self, message: str, field: str, code: str = "invalid_value"):
        super().__init__(message)
        self.field, self.code = field, code


def check_term(model, term: Term) -> Term:
    """``term`` with its layers and positions filled in, checked against ``model``: :class:`SteeringError` for a
    vector of another width, a layer out of range or not in the vector, positions that do not fit the vector, or
    an edit (vector x strength) too large for the model's dtype."""
    vec = term.vector
    if not _is_vector(vec):
        raise TypeError(f"not a steering vector: {type(vec).__name__}; build one with caa_vector, sas_vector, ...")
    _check_model(model, vec)
    mult = strength(term.strength, "multiplier")
    if term.positions is not None and term.positions not in POSITIONS:
        raise SteeringError(f"positions must be one of {POSITIONS}, not {term.positions!r}", "positions")
    pos = term.positions or vec.positions
    # a layer given twice steers once (a repeated layer had added the vector twice: found by tests/test_properties.py)
    layers = vec.layers if term.layers is None else list(dict.fromkeys(int_list(term.layers, "layers")))
    if not layers:
        raise SteeringError("layers is empty: nothing would be steered; pass None for all of the vector's layers",
                            "layers")
    dtype = model.cfg.dtype
    top = float(mult.abs().max()) if isinstance(mult, torch.Tensor) else abs(mult)
    for layer in layers:
        if not 0 <= layer < model.cfg.n_layers:
            raise SteeringError(f"layer {layer} is out of range for {model.cfg.model_name} "
                                f"({model.cfg.n_layers} layers: 0..{model.cfg.n_layers - 1})", "layers",
                                "layer_out_of_range")
        if layer not in vec.layers:
            raise SteeringError(f"the {vec.method} vector has no direction for layer {layer}; it has {vec.layers}",
                                "layers", "layer_not_in_vector")
        d = vec.tensor(layer)
        if not torch.isfinite(d).all():  # edited in place after construction, which checked it
            raise SteeringError(f"the {vec.method} vector has NaN or inf entries at layer {layer} (changed after it "
                                "was built?); rebuild it", "vector")
        # the edit's size, in float64: it must be a number in the model's dtype (the norm layers square it)
        size = top * float(d.double().norm(dim=-1).max())
        if not size <= torch.finfo(dtype).max:
            raise SteeringError(f"the {vec.method} vector x multiplier {top:g} makes an edit of norm {size:.3g} at "
                                f"layer {layer}, beyond what {str(dtype).removeprefix('torch.')} holds "
                                f"({torch.finfo(dtype).max:.3g}): the model would compute inf and NaN. Use a smaller "
                                "multiplier or rebuild the vector", "strength")
        if pos == "front" and not vec.aligned(layer):
            raise SteeringError("positions='front' adds row i of a position-aligned vector [n_pos, d_model] at the "
                                "i-th token (ActAdd); this vector has one direction: use 'all' or 'after_prompt'",
                                "positions")
    missing = [vec.hook_name(x) for x in layers if vec.hook_name(x) not in model.hook_dict]
    if missing:
        raise SteeringError(f"{model.cfg.model_name} has no hook point {missing[0]!r}", "vector")
    if term.condition is not None:
        try:
            term.condition.check(model, layers)
        except (AttributeError, ValueError) as e:
            msg = str(e) if not isinstance(e, AttributeError) else \
                f"not a condition: {type(term.condition).__name__}; build one with condition_from_texts"
            raise SteeringError(msg, "condition") from e
    return Term(vec, mult, layers, pos, term.condition)


def term_hooks(model, terms: Sequence[Term], receipt: Receipt | None = None) -> list[tuple[str, Callable]]:
    """The one place that turns steering terms into hooks: one ``(hook_name, fn)`` pair per hook point, applying
    every term there in order, and recording the edit it applied in ``receipt`` (default: the one of an enclosing
    :func:`recording` block)."""
    from .condition import Gate

    receipt = receipt if receipt is not None else _RECEIPT.get()
    by_name: dict[str, list] = {}
    gates: dict[int, Gate] = {}  # one reading per condition, shared by the terms it gates
    for t in (check_term(model, t) for t in terms):
        gate = None if t.condition is None else gates.setdefault(id(t.condition), Gate(t.condition))
        for layer in t.layers:
            fn = t.vector.hook(layer, t.strength, t.positions)
            fn = fn if gate is None else gate.wrap(fn, layer)
            by_name.setdefault(t.vector.hook_name(layer), []).append((fn, t.strength))

    def compose(name: str, fns: list) -> Callable:
        layer, label = layer_of(name), fns[0][1]  # edits are told apart by the first term's strengths

        def hook(resid: torch.Tensor, hook=None) -> torch.Tensor:
            out = resid
            for fn, _ in fns:
                out = fn(out, hook=hook)
            if receipt is not None:
                receipt.record(layer, resid, out, torch.as_tensor(label, dtype=torch.float64).expand(len(resid)))
            return out

        return hook

    # the conditions' readers first: at a shared hook point they read the residual before it is edited
    return [g.reader() for g in gates.values()] + [(name, compose(name, fns)) for name, fns in by_name.items()]


def row_terms(rows: Sequence[Sequence[Term]]) -> list[Term]:
    """Terms that steer each batch row by its own terms (``rows[i]``: the terms of row ``i``): one term per
    (vector, layer, positions) used by any row, with a strength per row (0 for the rows that do not use it)."""
    n = len(rows)
    merged: dict[tuple, list] = {}  # (vector id, layer, positions, condition id, k-th use) -> [vec, strengths, cond]
    for i, terms in enumerate(rows):
        seen: dict[tuple, int] = {}
        for t in terms:
            for layer in t.layers or t.vector.layers:
                base = (id(t.vector), layer, t.positions or t.vector.positions, id(t.condition))
                k = seen.get(base, 0)
                seen[base] = k + 1
                entry = merged.setdefault((*base, k), [t.vector, torch.zeros(n), t.condition])  # the hook moves it
                entry[1][i] = float(t.strength)
    return [Term(vec, s, [layer], positions, cond)
            for (_, layer, positions, _, _), (vec, s, cond) in merged.items() if s.any()]


def steering_hooks(model, vectors, multipliers=1.0, layers: Sequence[int] | None = None,
                   positions: str | None = None, receipt: Receipt | None = None,
                   condition=None) -> list[tuple[str, Callable]]:
    """``(hook_name, fn)`` pairs for ``model.run_with_hooks(tokens, fwd_hooks=...)`` or ``model.hooks``.

    ``vectors``: one vector or a list (dense :class:`SteeringVector` or sparse vectors), ``multipliers``:
    one number or one per vector (each a number, or a 1-D tensor with one strength per batch row), ``layers``: a subset of each vector's layers (default all),
    ``positions``: ``all``, ``after_prompt`` or ``front`` (default: each vector's own); ``receipt``: a
    :class:`Receipt` that records the edits the hooks apply; ``condition``: a
    :class:`~sas.steering.condition.Condition`, every vector edits only where it holds (rows or tokens where it does
    not are left unchanged and count no edit in the receipt).
    """
    return term_hooks(model, [Term(v, m, layers, positions, condition) for v, m in _as_terms(vectors, multipliers)],
                      receipt)


def _check_model(model, vec) -> None:
    if vec.d_model != model.cfg.d_model:
        made = (f"it was made for {vec.model}" if vec.model and vec.model != model.cfg.model_name else
                "it was made for another model" + (f" (its file names {vec.model}, which the width contradicts)"
                                                   if vec.model else ""))
        raise SteeringError(f"the vector has width {vec.d_model} but {model.cfg.model_name} has d_model "
                            f"{model.cfg.d_model}: {made}; rebuild it for this model", "vector", "wrong_width")
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
def steer(model, vectors, multipliers=1.0, layers: Sequence[int] | None = None, positions: str | None = None,
          receipt: Receipt | None = None, condition=None):
    """Context manager: steer ``model`` with ``vectors`` x ``multipliers`` inside the block.

    See :func:`steering_hooks` for the arguments (``receipt`` records what the block's hooks edited). The hooks are removed on exit, also after an error.
    Steering is per thread: forward passes that another thread (or asyncio task) runs on the same model while
    this block is open are not steered, and leaving a block removes only its own hooks (TransformerLens's
    ``model.hooks`` removes hooks by nesting level, which threads share, so it is not used here). Hooks you add
    yourself with ``model.hooks`` stay global to the model.
    """
    with hooked(model, steering_hooks(model, vectors, multipliers, layers, positions, receipt, condition)):
        yield model


@contextmanager
def steer_terms(model, terms: Sequence[Term], receipt: Receipt | None = None):
    """:func:`steer` for a list of :class:`Term` (each with its own layers and positions)."""
    with hooked(model, term_hooks(model, terms, receipt)):
        yield model


@contextmanager
def hooked(model, hooks: list[tuple[str, Callable]]):
    """Install ``hooks`` for the block, for forward passes of this thread (or asyncio task) only."""
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
