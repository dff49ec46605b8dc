"""Steering vectors as values: per-layer tensors plus metadata; add, subtract, scale, save, load."""

from __future__ import annotations

import json
from numbers import Integral
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..files import parse_json, write_atomic
from ..forward.positions import POSITIONS, _real_positions, position_mask, row_strengths
from ..hooks import RESID_HOOK, check_hook_template, hook_at

SUFFIX = ".safetensors"


def vector_path(path: str | Path) -> Path:
    """``path`` with ``.safetensors`` appended unless it already ends so: a dot inside a name (``tau0.1``)
    is part of the name, never a suffix to replace."""
    path = Path(path)
    return path if path.name.endswith(SUFFIX) else path.with_name(path.name + SUFFIX)


def write_vector_file(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` with ``meta`` in the header to ``vector_path(path)`` atomically, and a readable
    ``.json`` copy of ``meta`` beside it. Returns the ``.safetensors`` path."""
    path = vector_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, default=str)
    sidecar = path.with_name(path.name[:-len(SUFFIX)] + ".json")
    write_atomic(path, lambda t: save_file(tensors, str(t), metadata={"sas": text}))
    write_atomic(sidecar, lambda t: t.write_text(json.dumps(meta, indent=1, default=str)))
    return path


def read_vector_file(path: str | Path, what: str) -> tuple[Path, dict[int, torch.Tensor], dict]:
    """``(path, {layer: tensor}, meta)`` of a file written by :func:`write_vector_file`; clear errors for a
    missing file, a file that is not a safetensors file, or one without sas metadata."""
    from safetensors import SafetensorError, safe_open

    path = vector_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no steering vector at {path}; make one with `sas vectors` or .save()")
    try:
        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get("sas", "{}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e}); write it again with .save()") from e
    meta = parse_json(raw, f"{path}: its sas metadata")
    if not isinstance(meta, dict) or not meta:
        raise ValueError(f"{path} has no sas metadata; was it written by SteeringVector.save() or SparseVector.save()?")
    layers = {}
    for k, v in tensors.items():
        if not k.startswith("layer.") or not k.removeprefix("layer.").isdigit():
            raise ValueError(f"{path}: unexpected tensor {k!r}; a {what} file holds tensors 'layer.<int>'")
        layers[int(k.removeprefix("layer."))] = v
    return path, layers, meta


def check_place(hook_point: str, positions: str) -> None:
    """``ValueError`` unless ``hook_point`` is a hook template sas steers at and ``positions`` one of :data:`POSITIONS`."""
    check_hook_template(hook_point)
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}")


def check_directions(directions: dict, what: str = "direction", max_ndim: int = 2) -> None:
    """``ValueError`` unless ``directions`` is a non-empty ``{int layer: finite tensor}`` of one width, each
    tensor ``[width]`` (or ``[n_pos, width]`` when ``max_ndim`` is 2)."""
    if not isinstance(directions, dict) or not directions:
        raise ValueError(f"a steering vector needs at least one layer; got {directions!r}")
    widths = {}
    for layer, d in directions.items():
        if isinstance(layer, bool) or not isinstance(layer, Integral) or layer < 0:
            raise ValueError(f"layers are block indices (int >= 0), not {layer!r}")
        if not isinstance(d, torch.Tensor):
            raise ValueError(f"the {what} at layer {layer} is a {type(d).__name__}, not a torch.Tensor")
        if not 1 <= d.ndim <= max_ndim or d.shape[-1] == 0:
            raise ValueError(f"the {what} at layer {layer} has shape {tuple(d.shape)}: expected [width]"
                             + (" or [n_pos, width]" if max_ndim == 2 else "") + " (wrong number of dimensions)")
        if not torch.isfinite(d).all():
            raise ValueError(f"the {what} at layer {layer} has NaN or inf entries; "
                             "rebuild the vector (check the data and the model dtype)")
        widths[layer] = d.shape[-1]
    if len(set(widths.values())) > 1:
        raise ValueError(f"the {what}s differ in width across layers ({widths}); one vector holds one model's "
                         "residual stream")



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
    kind = "dense"
    linear = True

    def __post_init__(self):
        check_place(self.hook_point, self.positions)
        check_directions(self.directions)
        if self.positions == "front" and any(d.ndim != 2 for d in self.directions.values()):
            raise ValueError("positions='front' adds row i at the i-th token, so it needs position-aligned "
                             "directions [n_pos, d_model] (ActAdd); this vector is [d_model]: use 'all' or "
                             "'after_prompt'")

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    @property
    def d_model(self) -> int:
        return next(iter(self.directions.values())).shape[-1]

    def hook_name(self, layer: int) -> str:
        return hook_at(self.hook_point, layer)

    def tensor(self, layer: int) -> torch.Tensor:
        return self.directions[layer]

    def aligned(self, layer: int) -> bool:
        return self.directions[layer].ndim == 2

    def to_dense(self) -> "SteeringVector":
        return self

    def summary(self) -> dict:
        return {"kind": self.kind, "norms": {str(k): round(v, 4) for k, v in self.norms().items()}}

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
        """Write ``path.safetensors`` (one tensor per layer, metadata in the header) and ``path.json`` (the
        metadata, readable) atomically; ``path`` may already end in ``.safetensors``. Returns the file."""
        tensors = {f"layer.{k}": v.detach().float().contiguous().cpu() for k, v in self.directions.items()}
        return write_vector_file(path, tensors, self.meta())

    @classmethod
    def load(cls, path: str | Path) -> "SteeringVector":
        """The vector saved at ``path`` (``.safetensors`` optional). Its hook, shapes and values are checked
        as on construction; ``ValueError`` for a file that fails them."""
        from .kinds import check_kind

        path, dirs, meta = read_vector_file(path, "SteeringVector")
        check_kind(path, meta, "dense")
        missing = [k for k in ("model", "method") if k not in meta]
        if missing:
            raise ValueError(f"{path}: the sas metadata lacks {missing}; write the vector again with .save()")
        keep = {k: meta[k] for k in ("model", "method", "behavior", "positions", "data_hash", "settings") if k in meta}
        try:
            return cls(directions=dirs, hook_point=meta.get("hook_point", meta.get("hook", RESID_HOOK)), **keep)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e


def read_meta(path: str | Path) -> dict:
    """The ``sas`` metadata in a vector file's header (``{}`` if it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return parse_json((f.metadata() or {}).get("sas", "{}"), f"{path}: its sas metadata")

