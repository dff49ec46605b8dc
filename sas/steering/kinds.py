"""The two kinds of steering vector, dense (:class:`SteeringVector`) and sparse (:class:`SparseVector`): the
protocol both implement, and :func:`load_vector`, which reads a saved file of either kind.

Code outside ``sas.steering`` uses a vector only through :class:`Vector`; it never asks which kind it holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch

KINDS = {"dense": "SteeringVector", "sparse": "SparseVector"}


@runtime_checkable
class Vector(Protocol):
    """What every steering vector offers.

    ``layers``: the blocks it steers; ``d_model``: the width of the residual stream it writes into;
    ``hook_point``: the TransformerLens hook with ``{layer}`` left open; ``positions``: where it steers by default.
    """

    model: str
    method: str
    behavior: str
    hook_point: str
    positions: str
    settings: dict
    kind: str  # "dense" or "sparse"
    linear: bool  # True: the edit is the multiplier times a fixed direction

    @property
    def layers(self) -> list[int]: ...

    @property
    def d_model(self) -> int: ...

    def hook_name(self, layer: int) -> str: ...

    def hook(self, layer: int, strength, positions: str | None = None) -> Callable: ...

    def tensor(self, layer: int) -> torch.Tensor:
        """The values steered with at ``layer``: a direction ``[d_model]`` / ``[n_pos, d_model]`` or a code
        ``[d_sae]``."""

    def aligned(self, layer: int) -> bool:
        """True if ``layer`` holds position-aligned rows (ActAdd, positions ``front``)."""

    def to_dense(self): ...

    def norms(self) -> dict[int, float]: ...

    def summary(self) -> dict:
        """A short JSON description: ``kind`` and what matters for that kind (norms, or features and SAEs)."""

    def meta(self) -> dict: ...

    def save(self, path: str | Path) -> Path: ...


def file_kind(meta: dict) -> str:
    """``dense`` or ``sparse``: the kind of vector a file's ``sas`` metadata describes."""
    return "sparse" if "sae_names" in meta or "sae" in meta else "dense"


def check_kind(path, meta: dict, want: str) -> None:
    """``ValueError`` naming both kinds if the file at ``path`` holds a vector of another kind than ``want``."""
    got = file_kind(meta)
    if got != want:
        raise ValueError(f"{path} holds a {got} vector ({KINDS[got]}), not a {want} one ({KINDS[want]}); load it "
                         f"with {KINDS[got]}.load or sas.load_vector, which reads either kind")


def load_vector(path: str | Path, model=None, saes: dict | None = None, allow_sae_mismatch: bool = False) -> Vector:
    """The vector saved at ``path`` (``.safetensors`` optional; a dot inside the name, ``caa_tau0.1``, is part of
    the name), dense or sparse as its metadata says. A sparse vector takes its SAEs from ``saes`` ({layer: SAE})
    or loads the registry SAEs its file names (for ``model``); see :meth:`SparseVector.load`."""
    from .sparse import SparseVector
    from .vector import SteeringVector, read_vector_file

    path, _, meta = read_vector_file(path, "steering vector")
    if "condition" in meta:
        raise ValueError(f"{path} holds a condition, not a steering vector; load it with sas.load_condition")
    if file_kind(meta) == "sparse":
        return SparseVector.load(path, saes=saes, model=model, allow_sae_mismatch=allow_sae_mismatch)
    return SteeringVector.load(path)
