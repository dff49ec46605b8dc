"""Sparse activation steering (SAS; Bayat et al. 2025): steering vectors in an SAE's sparse space.

A SAS vector is built from the SAE codes of the answer-token activations of contrastive pairs:
per side, keep the features that fire on at least a fraction ``tau`` of the rows, drop the
features kept on both sides, and take the positive mean minus the negative mean. At inference the
residual ``a`` becomes

    a' = decode(sigma(encode(a) + lambda * v)) + (a - decode(encode(a)))

so the SAE's reconstruction error of the unsteered activation is kept. With an elementwise
activation (ReLU, JumpReLU) only the features in v's support S change, and the same edit is
``a + W_dec[S]^T (sigma(z_S + lambda v_S) - z_S)`` with ``z_S`` from the encoder rows of S alone:
the fast path, exact and O(|S| d_model) per token.

``edit="clamp"`` sets the chosen features instead of adding to them (as Neuronpedia's steering does): at strength
``s`` the features on the side of ``s`` (``sign(v_f) == sign(s)``) are set to ``|s| x typical[f]``, their typical
active value, and those of the other side to 0; the reconstruction error is kept, and ``s = 0`` is no edit.

``edit="relu"`` reads sigma as a plain ReLU on the edited code: ``decode(relu(encode(a) + lambda v))``. For a TopK
SAE the SAE's own activation re-applies TopK, so the vector's features can only enter a token's code by pushing
out as many of the token's own features (on ``gemma-3-270m-L9-16k-topk`` the weddings vector at relative strength
0.1 replaces about 26 of each token's 64 features); with ``relu`` they join the code instead and only the
features of the support change. For a JumpReLU SAE ``relu`` drops the thresholds' gating of the support.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..forward.positions import position_mask, row_strengths
from ..hooks import RESID_HOOK, hook_at
from .vector import SteeringVector, check_directions, check_place, read_vector_file, write_vector_file


def architecture(sae) -> str:
    a = sae.cfg.architecture
    return a() if callable(a) else str(a)


def _elementwise(sae) -> bool:
    # a gated SAE gates with a second pre-activation (and has no b_enc): it takes the full path
    return architecture(sae) in ("jumprelu", "standard") and \
        getattr(sae.cfg, "normalize_activations", "none") in ("none", None)


def sigma(sae, code: torch.Tensor) -> torch.Tensor:
    """The SAE's own activation applied to an edited code ``[..., d_sae]`` (JumpReLU with its thresholds,
    ReLU, or TopK re-applied)."""
    arch = architecture(sae)
    if arch == "jumprelu":
        return torch.relu(code) * (code > sae.threshold.to(code.dtype))
    if arch in ("topk", "batchtopk"):
        k = int(getattr(sae.cfg, "k", 0))
        vals, idx = code.topk(k, dim=-1)
        return torch.zeros_like(code).scatter(-1, idx, torch.relu(vals))
    return torch.relu(code)


EDITS = ("add", "clamp", "relu")


def clamp_code(z: torch.Tensor, strength: torch.Tensor, v: torch.Tensor, typical: torch.Tensor) -> torch.Tensor:
    """The clamped code of the support: ``z [n, |S|]``, per-row ``strength [n, 1]``, ``v, typical [|S|]``. Features
    on the side of the strength's sign are set to ``|strength| x typical``, the others to 0; rows of strength 0 keep
    ``z``."""
    on = torch.sign(v)[None, :] == torch.sign(strength)
    target = torch.where(on, strength.abs() * typical[None, :], torch.zeros_like(z))
    return torch.where(strength == 0, z, target)


@dataclass
class SparseVector:
    """A SAS vector: ``codes[layer]`` is ``[d_sae]`` (zero outside the selected features).

    ``saes[layer]`` is the sae-lens SAE it lives in (not saved; ``sae_names``/``sae_hashes`` are).
    """

    codes: dict[int, torch.Tensor]
    saes: dict[int, object] = field(repr=False)
    model: str = ""
    behavior: str = "custom"
    method: str = "sas"
    hook_point: str = RESID_HOOK  # the TransformerLens hook, {layer} left open
    positions: str = "after_prompt"
    sae_names: dict[int, str] = field(default_factory=dict)
    data_hash: str = ""
    settings: dict = field(default_factory=dict)
    fast: bool = True  # use the fast exact path when the activation is elementwise
    edit: str = "add"  # "add" (SAS), "clamp" (set the chosen features to |strength| x their typical value) or
    # "relu" (SAS with a plain ReLU as sigma: for a TopK SAE, the features join the code instead of evicting others)
    typical: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)  # clamp: [d_sae] per layer
    kind = "sparse"
    linear = False

    def __post_init__(self):
        from ..load.saes import sae_hook

        check_place(self.hook_point, self.positions)
        check_directions(self.codes, "code", max_ndim=1)
        for layer, c in self.codes.items():
            if layer not in self.saes:
                raise ValueError(f"no SAE given for layer {layer}")
            if c.shape[-1] != self.saes[layer].cfg.d_sae:
                raise ValueError(f"the code at layer {layer} has {c.shape[-1]} features but its SAE has "
                                 f"{self.saes[layer].cfg.d_sae}")
            if sae_hook(self.saes[layer]) != self.hook_name(layer):
                # the same width at another layer would steer silently with the wrong dictionary
                raise ValueError(f"the SAE given for layer {layer} reads {sae_hook(self.saes[layer])!r}, not "
                                 f"{self.hook_name(layer)!r}: pass the SAE trained at layer {layer}")
        if self.edit not in EDITS:
            raise ValueError(f"edit must be one of {EDITS}, not {self.edit!r}")
        if self.edit == "clamp":
            for layer, c in self.codes.items():
                t = self.typical.get(layer)
                if t is None or t.shape != c.shape:
                    raise ValueError(f"a clamp vector needs the typical active value of every feature at layer {layer} "
                                     "(typical={layer: [d_sae]}); sas.activations.feature_stats computes them")
                bad = [int(f) for f in c.nonzero()[:, 0] if not (torch.isfinite(t[f]) and t[f] > 0)]
                if bad:
                    raise ValueError(f"the clamp target of feature(s) {bad[:10]} at layer {layer} is not a finite "
                                     "positive value (their typical active value is 0, NaN or inf: dead features?); "
                                     "drop them from the vector or recompute the statistics")

    @property
    def layers(self) -> list[int]:
        return sorted(self.codes)

    @property
    def d_model(self) -> int:
        return self.saes[self.layers[0]].cfg.d_in

    def hook_name(self, layer: int) -> str:
        return hook_at(self.hook_point, layer)

    def tensor(self, layer: int) -> torch.Tensor:
        return self.codes[layer]

    def aligned(self, layer: int) -> bool:
        return False

    def summary(self) -> dict:
        return {"kind": self.kind, "n_features": self.n_features(), "saes": self.sae_names}

    def features(self, layer: int | None = None) -> torch.Tensor:
        """Indices of the features in the support (sorted by |v|, largest first)."""
        c = self.codes[self.layers[0] if layer is None else layer]
        idx = c.nonzero()[:, 0]
        return idx[c[idx].abs().argsort(descending=True)]

    def n_features(self) -> dict[int, int]:
        return {k: int((v != 0).sum()) for k, v in sorted(self.codes.items())}

    def norms(self) -> dict[int, float]:
        return {k: v.norm().item() for k, v in sorted(self.codes.items())}

    # values: add codes (composition in the sparse space), scale
    def __add__(self, other: "SparseVector") -> "SparseVector":
        if not isinstance(other, SparseVector):
            return NotImplemented
        if self.edit != other.edit:
            raise ValueError(f"cannot add a {self.edit!r} vector to a {other.edit!r} vector")
        for layer in set(self.codes) & set(other.codes):
            if self.saes[layer] is not other.saes[layer] and self.sae_names.get(layer) != other.sae_names.get(layer):
                raise ValueError(f"cannot add SAS vectors from different SAEs at layer {layer}")
        codes = {k: v.clone() for k, v in self.codes.items()}
        for k, v in other.codes.items():
            codes[k] = codes[k] + v if k in codes else v.clone()
        return replace(self, codes=codes, saes={**other.saes, **self.saes}, typical={**other.typical, **self.typical},
                       sae_names={**other.sae_names, **self.sae_names},
                       behavior=self.behavior if self.behavior == other.behavior else "mixed", data_hash="",
                       settings={"parts": [self.meta(), other.meta()]})

    def __mul__(self, c: float) -> "SparseVector":
        return replace(self, codes={k: v * float(c) for k, v in self.codes.items()})

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def to_dense(self) -> SteeringVector:
        """The dense direction ``W_dec^T v`` per layer, as a :class:`SteeringVector` (method ``sas_dense``). For a clamp
        vector it is the direction of its feature choice and signs, not what the clamp does to a given token."""
        with torch.no_grad():
            dirs = {k: (v.clone().to(self.saes[k].W_dec.dtype) @ self.saes[k].W_dec.detach()).float()
                    for k, v in self.codes.items()}
        return SteeringVector(dirs, self.model, "sas_dense", self.behavior, self.hook_point, self.positions,
                              self.data_hash, {**self.settings, "from": "sas", "sae": self.sae_names})

    def hook(self, layer: int, strength, positions: str | None = None):
        """The TransformerLens hook that makes the sparse edit with ``strength`` (a number, or a 1-D tensor
        of one strength per batch row) at ``positions`` (default: the vector's own)."""
        positions = positions or self.positions
        sae = self.saes[layer]
        v = self.codes[layer]
        clamp = self.edit == "clamp"
        if clamp and not torch.isfinite(torch.as_tensor(strength, dtype=torch.float64)).all():
            raise ValueError(f"the clamp target |strength| x typical value must be finite; strength {strength!r} is not")
        typ = self.typical.get(layer)
        relu = self.edit == "relu"
        fast = self.fast and _elementwise(sae)
        if self.fast and not fast and architecture(sae) != "topk":  # TopK has no other exact path: nothing to say
            warnings.warn(f"SAE at layer {layer} ({architecture(sae)}) has no elementwise activation: "
                          "using the full (exact, slower) path")
        support = v.nonzero()[:, 0]
        if fast:
            w_enc = sae.W_enc[:, support].detach()
            b_enc = sae.b_enc[support].detach()
            w_dec = sae.W_dec[support].detach()
            thr = sae.threshold[support].detach() if architecture(sae) == "jumprelu" else None
            thr_edit = None if relu else thr  # the threshold sigma applies to the edited code
            b_dec_in = sae.b_dec.detach() if getattr(sae.cfg, "apply_b_dec_to_input", False) else None
            v_s = v[support]
            typ_s = typ[support] if clamp else None
        cast = {}  # the support's weights on the residual's device and dtype, converted once per (device, dtype)

        def support_weights(x: torch.Tensor):
            key = (x.device, x.dtype)
            if key not in cast:
                cast[key] = [t if t is None else t.to(x.device, x.dtype)
                             for t in (w_enc, b_enc, w_dec, thr, b_dec_in, v_s, typ_s, thr_edit)]
            return cast[key]

        def hook(resid: torch.Tensor, hook=None) -> torch.Tensor:
            n_batch, n_pos, _ = resid.shape
            mask = position_mask(positions, n_batch, n_pos, resid.device)
            x = resid[mask]  # [n_steered, d_model]
            if x.numel() == 0 or (not isinstance(strength, torch.Tensor) and strength == 0):
                return resid
            # one strength per steered row: [n_steered, 1]
            multiplier = row_strengths(strength, n_batch, x.device, x.dtype)[:, :, 0].expand(n_batch, n_pos)[mask][:, None]
            if fast:
                w_e, b_e, w_d, th, b_in, vs, ts, th2 = support_weights(x)
                xin = (x - b_in) if b_in is not None else x
                pre = xin @ w_e + b_e
                z = torch.relu(pre) if th is None else torch.relu(pre) * (pre > th)
                if clamp:
                    z2 = clamp_code(z, multiplier, vs, ts)
                else:
                    c = z + multiplier * vs
                    z2 = torch.relu(c) if th2 is None else torch.relu(c) * (c > th2)
                delta = (z2 - z) @ w_d
            else:
                with torch.no_grad():
                    z = sae.encode(x.to(sae.W_enc.device, sae.dtype))
                    m = multiplier.to(z.device, z.dtype)
                    if clamp:
                        z2 = z.clone()
                        z2[:, support] = clamp_code(z[:, support], m, v[support].to(z.device, z.dtype),
                                                    typ[support].to(z.device, z.dtype))
                    elif relu:
                        z2 = torch.relu(z + m * v.to(z.device, z.dtype))
                    else:
                        z2 = sigma(sae, z + m * v.to(z.device, z.dtype))
                    delta = (sae.decode(z2) - sae.decode(z)).to(x.device, x.dtype)  # = decode(z2) + error - x
            out = resid.clone()
            out[mask] = x + delta
            return out

        return hook

    def meta(self) -> dict:
        skip = ("codes", "saes", "typical")
        out = {**{k: v for k, v in self.__dict__.items() if k not in skip}, "layers": self.layers,
               "n_features": self.n_features()}
        if self.edit == "clamp":  # the typical values of the support only: small, and exact in JSON
            out["typical"] = {k: {int(f): float(self.typical[k][f]) for f in c.nonzero()[:, 0]}
                              for k, c in sorted(self.codes.items())}
        return out

    def sae_identity(self) -> dict[int, dict]:
        """What ties the vector to its SAEs: ``{layer: {"name", "hook", "sha256"}}`` (sha256 of the weights)."""
        from ..load.saes import sae_hash, sae_hook, sae_name

        return {k: {"name": self.sae_names.get(k) or sae_name(sae), "hook": sae_hook(sae), "sha256": sae_hash(sae)}
                for k, sae in sorted(self.saes.items()) if k in self.codes}

    def save(self, path: str | Path) -> Path:
        """Write ``path.safetensors`` (codes; metadata in the header: each SAE's name, hook and weights sha256) and
        ``path.json`` atomically; ``path`` may already end in ``.safetensors``. Returns the file."""
        tensors = {f"layer.{k}": v.detach().float().contiguous().cpu() for k, v in self.codes.items()}
        return write_vector_file(path, tensors, {**self.meta(), "sae": self.sae_identity()})

    @classmethod
    def load(cls, path: str | Path, saes: dict | None = None, model=None,
             allow_sae_mismatch: bool = False) -> "SparseVector":
        """Load a saved SAS vector.

        Its SAEs are ``saes`` ({layer: SAE}, which must then cover every layer of the vector) or, without
        ``saes``, the registry SAEs (``saes/``) of the saved names; a saved folder path or hub release is never
        followed. Each SAE must read the saved hook and have the saved weights sha256, else ``ValueError``
        (``allow_sae_mismatch=True``: a warning).
        """
        from ..load.saes import load_sae, registry, sae_hash, sae_hook

        from .kinds import check_kind

        path, codes, meta = read_vector_file(path, "SparseVector")
        check_kind(path, meta, "sparse")
        names = {int(k): v for k, v in meta.get("sae_names", {}).items()}
        ident = {int(k): v for k, v in meta.get("sae", {}).items()}
        if saes:
            missing = [x for x in sorted(codes) if x not in saes]
            if missing:
                given = sorted(saes)
                raise ValueError(f"{path} steers layer {', '.join(map(str, missing))}, but the SAEs given are for "
                                 f"layer(s) {given}; pass the SAE of layer {missing[0]} (saved as "
                                 f"{ident.get(missing[0], {}).get('name') or names.get(missing[0])!r})")
            saes = {x: saes[x] for x in codes}
        else:
            saes = {}
            known = registry()
            for layer in codes:
                name = ident.get(layer, {}).get("name") or names.get(layer)
                if name not in known:
                    raise ValueError(f"{path} names SAE {name!r} for layer {layer}, which is not in the registry "
                                     f"({sorted(known)}); sas never follows a path or hub name found in a vector "
                                     f"file: load that SAE yourself and pass saes={{{layer}: sae}}")
                saes[layer] = load_sae(name, model)
        for layer, sae in saes.items():
            want = ident.get(layer)
            if want is None:
                warnings.warn(f"{path} records no SAE hash for layer {layer} (written by an older sas): the SAE "
                              "cannot be checked; save the vector again to record it")
                continue
            problems = []
            if want.get("hook") != sae_hook(sae):
                problems.append(f"it reads {sae_hook(sae)!r}, the vector's SAE read {want.get('hook')!r}")
            if want.get("sha256") != sae_hash(sae):
                problems.append("its weights' sha256 differs from the one saved with the vector")
            if problems:
                msg = (f"the SAE for layer {layer} is not the one {path} was built in ({want.get('name')!r}): "
                       + "; ".join(problems))
                if not allow_sae_mismatch:
                    raise ValueError(msg + ". Pass the SAE it was built in, or allow_sae_mismatch=True")
                warnings.warn(msg)
        keep = {k: meta[k] for k in ("model", "behavior", "method", "positions", "data_hash", "settings", "edit")
                if k in meta}
        if meta.get("edit") == "clamp":
            keep["typical"] = {}
            for k, vals in (meta.get("typical") or {}).items():
                t = torch.zeros(codes[int(k)].shape[-1])
                for f, val in vals.items():
                    t[int(f)] = float(val)
                keep["typical"][int(k)] = t
        try:
            return cls(codes=codes, saes=saes, sae_names=names,
                       hook_point=meta.get("hook_point", meta.get("hook", RESID_HOOK)), **keep)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e
