"""Steering vectors as values: per-layer tensors plus metadata; add, subtract, scale, save, load."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..forward.positions import POSITIONS, _real_positions, position_mask, row_strengths
from ..hooks import RESID_HOOK, check_hook_template



@dataclass
class SteeringVector:
    """A dense steering vector.

    ``directions[layer]`` is ``[d_model]`` (added at every steered position) or ``[n_pos, d_model]``
    (ActAdd: row i is added at the i-th token of the prompt). ``hook_point`` is the TransformerLens hook
    name with ``{layer}`` left open; ``hook(layer, strength)`` is the hook function that steers there. ``positions`` is where it is added by default.
    """

    directions: dict[int, torch.Tensor]
    model: str
    method: str
    behavior: str = "custom"
    hook_point: str = RESID_HOOK  # the TransformerLens hook, {layer} left open
    positions: str = "after_prompt"
    data_hash: str = ""
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        check_hook_template(self.hook_point)
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, not {self.positions!r}")
        for layer, d in self.directions.items():
            if not torch.isfinite(d).all():
                raise ValueError(f"the direction at layer {layer} has NaN or inf entries; "
                                 "rebuild the vector (check the data and the model dtype)")

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    @property
    def d_model(self) -> int:
        return next(iter(self.directions.values())).shape[-1]

    def hook_name(self, layer: int) -> str:
        return self.hook_point.format(layer=layer)

    def hook(self, layer: int, strength, positions: str | None = None):
        """The TransformerLens hook that adds ``strength`` x ``directions[layer]`` at ``positions``
        (default: the vector's own). ``strength`` is a number or a 1-D tensor of one strength per batch row."""
        direction, positions = self.directions[layer], positions or self.positions

        def hook(resid: torch.Tensor, hook=None) -> torch.Tensor:
            n_batch, n_pos, _ = resid.shape
            s = row_strengths(strength, n_batch, resid.device, resid.dtype)
            d = direction.to(resid.device, resid.dtype)
            if positions == "front":  # ActAdd: row i of the direction goes to the i-th real token
                real, _ = _real_positions(n_batch, n_pos, resid.device)
                inside = (real >= 0) & (real < d.shape[0])
                idx = real.clamp(0, d.shape[0] - 1)
                return resid + s * d[idx] * inside[..., None]
            mask = position_mask(positions, n_batch, n_pos, resid.device)
            if d.ndim == 2:
                d = d.sum(0)  # a position-aligned vector used at other positions: its summed direction
            return resid + s * mask[..., None].to(resid.dtype) * d

        return hook

    def _combine(self, other: "SteeringVector", sign: float) -> "SteeringVector":
        if not isinstance(other, SteeringVector):
            return NotImplemented
        if other.model != self.model or other.hook_point != self.hook_point or other.d_model != self.d_model:
            raise ValueError(f"cannot combine a vector for {self.model} ({self.hook_point}, width {self.d_model}) with one "
                             f"for {other.model} ({other.hook_point}, width {other.d_model})")
        dirs = {k: v.clone() for k, v in self.directions.items()}
        for k, v in other.directions.items():
            dirs[k] = dirs[k] + sign * v if k in dirs else sign * v
        return replace(self, directions=dirs, method=f"{self.method}{'+' if sign > 0 else '-'}{other.method}",
                       behavior=self.behavior if self.behavior == other.behavior else "mixed",
                       data_hash="", settings={"parts": [self.meta(), other.meta()]})

    def __add__(self, other):
        return self._combine(other, 1.0)

    def __sub__(self, other):
        return self._combine(other, -1.0)

    def __mul__(self, c: float) -> "SteeringVector":
        return replace(self, directions={k: v * float(c) for k, v in self.directions.items()})

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0

    def __truediv__(self, c: float):
        return self * (1.0 / c)

    def only(self, layers) -> "SteeringVector":
        """The same vector restricted to ``layers``."""
        missing = set(layers) - set(self.directions)
        if missing:
            raise ValueError(f"the vector has no direction for layer(s) {sorted(missing)}; it has {self.layers}")
        return replace(self, directions={k: self.directions[k] for k in layers})

    def norms(self) -> dict[int, float]:
        return {k: v.norm(dim=-1).mean().item() for k, v in sorted(self.directions.items())}

    def meta(self) -> dict:
        m = {k: v for k, v in self.__dict__.items() if k != "directions"}
        return {**m, "layers": self.layers, "d_model": self.d_model}

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.safetensors``, one tensor per layer, metadata in the header) atomically."""
        path = Path(path).with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tensors = {f"layer.{k}": v.detach().float().contiguous().cpu() for k, v in self.directions.items()}
        try:
            save_file(tensors, str(tmp), metadata={"sas": json.dumps(self.meta())})
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # no half-written file left behind
            raise
        path.with_suffix(".json").write_text(json.dumps(self.meta(), indent=1))  # human-readable copy
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SteeringVector":
        from safetensors import safe_open

        path = Path(path).with_suffix(".safetensors")
        if not path.exists():
            raise FileNotFoundError(f"no steering vector at {path}; make one with `sas vectors`")
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("sas", "{}"))
        if not meta:
            raise ValueError(f"{path} has no sas metadata; was it written by SteeringVector.save?")
        tensors = load_file(str(path))
        dirs = {int(k.removeprefix("layer.")): v for k, v in tensors.items()}
        keep = {k: meta[k] for k in ("model", "method", "behavior", "positions", "data_hash", "settings")}
        return cls(directions=dirs, hook_point=meta.get("hook_point", meta.get("hook", RESID_HOOK)), **keep)


def read_meta(path: str | Path) -> dict:
    """The ``sas`` metadata in a vector file's header (``{}`` if it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads((f.metadata() or {}).get("sas", "{}"))

