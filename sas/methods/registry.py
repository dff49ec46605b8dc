"""Steering methods by name. A method is one file in ``sas/methods/`` that registers a builder:

    @register("caa", multipliers=(-2, -1, 0, 1, 2))
    def build(model, contrast, layers, saes=None, positions="after_prompt") -> SteeringVector: ...

``build(model, contrast, layers, saes, positions, **settings)`` takes the contrastive data
(:class:`sas.activations.contrast.Contrast`), the layers, the SAEs by layer (``{layer: SAE}``, for sparse
methods) and the method's own settings, and returns a vector (dense or sparse). Every module in this
folder is imported when the registry is first read, so adding a method is adding a file.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

from .._registry import Registry


@dataclass(frozen=True)
class Method:
    name: str
    build: Callable
    settings: dict = field(default_factory=dict)  # setting -> default; part of every result's resume key
    multipliers: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)  # default grid, in the method's own units
    needs_sae: bool = False
    description: str = ""
    steers: bool = True  # False: a baseline that edits no activations (prompting); it runs at no layer
    # what the method needs besides the model and the SAE, checked before a run generates anything:
    # missing(model, sae, **settings) -> None, or what is missing and the command that makes it
    missing: Callable | None = None


_METHODS = Registry("method", "sas.methods")


def register(name: str, *, multipliers=(-2.0, -1.0, 0.0, 1.0, 2.0), needs_sae: bool = False,
             description: str = "", steers: bool = True, missing: Callable | None = None) -> Callable:
    """Register ``fn`` as method ``name``; its keyword arguments after ``positions`` are its settings.
    ``missing(model, sae, **settings)``: what the method needs for ``sae`` that is not there (None: ready)."""

    def deco(fn):
        params = inspect.signature(fn).parameters
        settings = {k: p.default for k, p in params.items()
                    if k not in ("model", "contrast", "layers", "saes", "positions")}
        doc = description or (inspect.getdoc(fn) or "").split("\n")[0]
        _METHODS[name] = Method(name, fn, settings, tuple(float(m) for m in multipliers), needs_sae, doc, steers,
                                missing)
        return fn

    return deco


def methods() -> dict[str, Method]:
    """All registered methods, by name (the modules of this folder are imported on the first call)."""
    return _METHODS.all()


def get_method(name: str) -> Method:
    return _METHODS.get_entry(name)


def method_settings(name: str, given: dict | None = None) -> dict:
    """The method's settings: its defaults updated with ``given`` (an unknown setting is an error)."""
    m = get_method(name)
    given = dict(given or {})
    unknown = set(given) - set(m.settings)
    if unknown:
        raise ValueError(f"method {name!r} has no setting(s) {sorted(unknown)}; its settings: "
                         f"{m.settings or 'none'}")
    return {**m.settings, **given}


def build_vector(model, method: str, contrast, layers, saes: dict | None = None, positions: str = "after_prompt",
                 **settings):
    """Build a vector with a registered method (see the module docstring)."""
    m = get_method(method)
    if m.needs_sae and not saes:
        raise ValueError(f"method {method!r} steers in an SAE's sparse space: pass saes={{layer: SAE}}")
    return m.build(model, contrast, list(layers), saes, positions, **method_settings(method, settings))


def __getattr__(name):
    if name == "METHODS":
        return tuple(sorted(methods()))
    raise AttributeError(name)
