"""Conditions: steer only where the model's own activations say a condition holds.

A :class:`Condition` is a value, saved and loaded like a vector, in one of two forms:

- ``direction``: a dense direction ``[d_model]`` and a threshold (CAST, Lee et al. 2025): the condition holds for
  a prompt when the cosine between the direction and the prompt's residual (``reduce="mean"``: the mean over the
  prompt's tokens, BOS left out; ``"last"``: its last token) exceeds the threshold; per token, each token's cosine.
- ``features``: SAE features with one activation threshold each: the condition holds at a token where any of the
  features is active above its threshold.

``scope="prompt"`` decides once per row, in the prompt's forward pass, and keeps the decision for every generated
token (a ``features`` condition holds when any prompt token fires); ``scope="token"`` decides at each position.

    cond = condition_from_texts(model, cooking_prompts, other_prompts, layer=9)            # dense, CAST's form
    cond = condition_from_texts(model, cooking_prompts, other_prompts, layer=9, sae=sae)   # SAE features
    with sas.steer(model, negative, 4.0, condition=cond):
        sas.generate(model, prompts)   # only the rows about cooking are steered

The condition is read by a hook at its layer in the same forward pass that steers (no second pass), so it must
be read no later than it is used: a ``token`` condition's layer must be at or before every steered layer. A
``prompt`` condition read after a steered layer applies there from the first generated token on (the prompt's
pass reaches that layer before the decision exists).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..forward.positions import _BATCH, _real_positions
from ..hooks import RESID_HOOK, hook_at

KINDS = ("direction", "features")
SCOPES = ("prompt", "token")


@dataclass
class Condition:
    """``kind="direction"``: ``direction [d_model]`` and ``threshold``; ``kind="features"``: ``features`` (SAE feature
    indices), ``thresholds`` (one activation threshold each) and ``sae`` (the sae-lens SAE at ``layer``; not saved,
    its name and weights sha256 are). ``layer``: the block whose output (``hook_point``) is read; ``scope``:
    ``prompt`` or ``token``; ``settings``: how it was built (tuning accuracy, firing rates)."""

    kind: str
    layer: int
    model: str
    name: str = "condition"
    scope: str = "prompt"
    reduce: str = "mean"  # direction, per prompt: the mean residual over the prompt's tokens or its last token
    direction: torch.Tensor | None = None
    threshold: float = 0.0
    features: list[int] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    sae: object = field(default=None, repr=False)
    sae_name: str = ""
    hook_point: str = RESID_HOOK
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"a condition's kind is one of {KINDS}, not {self.kind!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"a condition's scope is one of {SCOPES}, not {self.scope!r}")
        if self.reduce not in ("mean", "last"):
            raise ValueError(f"a condition's reduce is 'mean' or 'last', not {self.reduce!r}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise ValueError(f"a condition's layer is a block index (int >= 0), not {self.layer!r}")
        hook_at(self.hook_point, self.layer)
        if self.kind == "direction":
            d = self.direction
            if not isinstance(d, torch.Tensor) or d.ndim != 1 or not len(d):
                raise ValueError(f"condition {self.name!r}: a direction condition needs direction [d_model], a 1-D "
                                 f"tensor; got {type(d).__name__ if not isinstance(d, torch.Tensor) else tuple(d.shape)}")
            if not torch.isfinite(d).all() or float(d.norm()) == 0:
                raise ValueError(f"condition {self.name!r}: its direction is zero or has NaN/inf entries; rebuild it")
            d = d.detach().float()
            if abs(float(d.norm()) - 1) > 1e-6:  # a unit direction
                d = d / d.norm()
            self.direction = d
            _finite(self.threshold, f"condition {self.name!r}: the threshold")
            return
        if self.sae is None:
            raise ValueError(f"condition {self.name!r}: a features condition needs its SAE (sae=...)")
        from ..load.saes import sae_layer

        if sae_layer(self.sae) != self.layer:
            raise ValueError(f"condition {self.name!r} reads layer {self.layer}, but its SAE reads layer "
                             f"{sae_layer(self.sae)}; pass the SAE of layer {self.layer}")
        if not self.features or len(self.features) != len(self.thresholds):
            raise ValueError(f"condition {self.name!r}: give at least one feature and one threshold per feature "
                             f"(got {len(self.features)} features, {len(self.thresholds)} thresholds)")
        d_sae = self.sae.cfg.d_sae
        bad = [f for f in self.features if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < d_sae]
        if bad:
            raise ValueError(f"condition {self.name!r}: feature(s) {bad[:5]} out of range for an SAE of {d_sae} features")
        for f, t in zip(self.features, self.thresholds):
            _finite(t, f"condition {self.name!r}: the threshold of feature {f}")
        self.sae_name = self.sae_name or _sae_name(self.sae)

    @property
    def d_model(self) -> int:
        return len(self.direction) if self.kind == "direction" else self.sae.cfg.d_in

    def hook_name(self) -> str:
        return hook_at(self.hook_point, self.layer)

    def describe(self) -> str:
        """One line: what it reads and when it holds."""
        if self.kind == "direction":
            what = "each token's residual" if self.scope == "token" else f"the prompt's {self.reduce} residual"
            return (f"{self.name}: cosine of {what} at layer {self.layer} with a direction > {self.threshold:.4g} "
                    f"(per {self.scope})")
        feats = ", ".join(f"{f} > {t:.3g}" for f, t in zip(self.features, self.thresholds))
        return f"{self.name}: any of {self.sae_name} features [{feats}] (per {self.scope})"

    # reading: token scores and decisions from residuals [batch, pos, d_model]
    def _reader(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function: residuals ``[..., d_model]`` -> per-token cosines with the direction ``[...]`` or per-token
        firing ``[...]`` bool (features). Weights are cast once per device and dtype."""
        cast: dict = {}
        if self.kind == "direction":
            def cosine(x):
                d = cast.setdefault(x.device, self.direction.to(x.device))
                return (x.float() @ d) / x.float().norm(dim=-1).clamp(min=1e-30)
            return cosine
        sae, idx = self.sae, torch.tensor(self.features)
        from .sparse import _elementwise, architecture

        if not _elementwise(sae):
            # TopK (a feature fires only among the k largest), gated or normalised input: the SAE's own encode
            # over every feature decides, as sae.encode would; slicing columns cannot
            def encoded(x):
                key = (x.device, "encode")
                if key not in cast:
                    cast[key] = torch.tensor(self.thresholds, device=x.device)
                w = sae.W_enc
                return (sae.encode(x.to(w.device, w.dtype))[..., idx.to(w.device)].float().to(x.device)
                        > cast[key]).any(-1)
            if architecture(sae) not in ("topk", "batchtopk") or min(self.thresholds) < 0 or \
                    getattr(sae.cfg, "normalize_activations", "none") not in ("none", None):
                return encoded
            # TopK: a feature's code is its pre-activation or 0, so it can exceed a threshold >= 0 only where the
            # pre-activation does. The condition's own columns find those tokens (few: the features are chosen
            # to be rare); the full encode decides only there. A margin keeps rounding from hiding a candidate.
            b_in = sae.b_dec.detach() if getattr(sae.cfg, "apply_b_dec_to_input", False) else None
            parts = (sae.W_enc.detach()[:, idx], sae.b_enc.detach()[idx], b_in, torch.tensor(self.thresholds))

            def prefiltered(x):
                key = (x.device, "columns")
                if key not in cast:
                    cast[key] = [t if t is None else t.to(x.device, torch.float32) for t in parts]
                w, b, bi, want = cast[key]
                xf = x.float() - bi if bi is not None else x.float()
                pre = xf @ w + b
                cand = (pre > want - 1e-3 * (1 + want)).any(-1)
                out = torch.zeros_like(cand)
                if cand.any():
                    out[cand] = encoded(x[cand])
                return out
            return prefiltered
        jump = architecture(sae) == "jumprelu"
        b_in = sae.b_dec.detach() if getattr(sae.cfg, "apply_b_dec_to_input", False) else None
        parts = (sae.W_enc.detach()[:, idx], sae.b_enc.detach()[idx], sae.threshold.detach()[idx] if jump else None,
                 b_in, torch.tensor(self.thresholds))

        def fires(x):  # JumpReLU or ReLU: each feature's code from its own column, as sae.encode computes it
            key = (x.device, x.dtype)
            if key not in cast:
                cast[key] = [t if t is None else t.to(x.device, torch.float32) for t in parts]
            w, b, th, bi, want = cast[key]
            x = x.float() - bi if bi is not None else x.float()
            pre = x @ w + b
            z = torch.relu(pre) if th is None else torch.relu(pre) * (pre > th)
            return (z > want).any(-1)
        return fires

    def decide(self, resid: torch.Tensor, real: torch.Tensor, reader: Callable | None = None) -> torch.Tensor:
        """Where the condition holds in one pass: ``resid [batch, pos, d_model]``, ``real [batch, pos]`` (the index
        of each token among its row's real tokens, negative for padding); ``reader``: a :meth:`_reader` made once.
        Returns ``[batch]`` bool for a ``prompt`` condition, ``[batch, pos]`` bool for a ``token`` one."""
        reader = reader or self._reader()
        counted = real >= 1  # the prompt's tokens after BOS (whose residual is an outlier)
        if self.kind == "direction" and self.scope == "prompt":
            x = resid[:, -1] if self.reduce == "last" else \
                (resid.float() * counted[..., None]).sum(1) / counted.sum(1, keepdim=True).clamp(min=1)
            return reader(x) > self.threshold
        read = reader(resid)
        if self.scope == "token":
            return (read > self.threshold if self.kind == "direction" else read) & (real >= 0)
        return (read & counted).any(1)

    def fires(self, model, prompts: Sequence[str]) -> torch.Tensor:
        """``[n]`` bool: whether the condition holds on each prompt (a ``token`` condition: on any prompt token),
        from the activation readers the builder uses."""
        return _prompt_fires(self, *_prompt_reads(model, list(prompts), self))

    def check(self, model, layers: Sequence[int]) -> None:
        """``ValueError`` naming both sides if the condition does not fit ``model`` or cannot gate ``layers``."""
        if self.model and self.model != model.cfg.model_name:
            raise ValueError(f"condition {self.name!r} was built for {self.model}, not {model.cfg.model_name}; "
                             "build it again on this model")
        if self.d_model != model.cfg.d_model:
            raise ValueError(f"condition {self.name!r} reads width {self.d_model}, but {model.cfg.model_name} has "
                             f"d_model {model.cfg.d_model}; build it again on this model")
        if not 0 <= self.layer < model.cfg.n_layers:
            raise ValueError(f"condition {self.name!r} reads layer {self.layer}, out of range for "
                             f"{model.cfg.model_name} (0..{model.cfg.n_layers - 1})")
        if self.hook_name() not in model.hook_dict:
            raise ValueError(f"{model.cfg.model_name} has no hook point {self.hook_name()!r}")
        early = [x for x in layers if x < self.layer]
        if self.scope == "token" and early:
            raise ValueError(f"condition {self.name!r} is decided per token at layer {self.layer}, after the steered "
                             f"layer {early[0]}: a token's condition must be read at or before the layer it gates. "
                             f"Steer at layer >= {self.layer}, or build the condition at layer <= {min(early)}")

    # files
    def meta(self) -> dict:
        m = {"condition": self.kind, "layer": self.layer, "model": self.model, "name": self.name,
             "scope": self.scope, "reduce": self.reduce, "hook_point": self.hook_point, "settings": self.settings}
        if self.kind == "direction":
            return {**m, "threshold": self.threshold, "d_model": self.d_model}
        from ..load.saes import sae_hash, sae_hook

        return {**m, "features": {str(f): t for f, t in zip(self.features, self.thresholds)},
                "sae": {"name": self.sae_name, "hook": sae_hook(self.sae), "sha256": sae_hash(self.sae)}}

    def save(self, path: str | Path) -> Path:
        """Write ``path.safetensors`` (the direction, or a 0/1 mask of the features over the SAE's width; metadata in
        the header) and ``path.json`` atomically, as vectors are saved. Returns the file."""
        from .vector import write_vector_file

        if self.kind == "direction":
            t = self.direction
        else:
            t = torch.zeros(self.sae.cfg.d_sae)
            t[self.features] = 1.0
        return write_vector_file(path, {f"layer.{self.layer}": t.detach().float().contiguous().cpu()}, self.meta())


def _finite(x, what: str) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"{what} must be a finite number, not {x!r}")


def _sae_name(sae) -> str:
    from ..load.saes import sae_name

    return sae_name(sae)


def is_condition_file(meta: dict) -> bool:
    return "condition" in meta


def load_condition(path: str | Path, model=None, sae=None) -> Condition:
    """The condition saved at ``path``. A ``features`` condition takes ``sae`` or loads the registry SAE its file
    names (for ``model``); the SAE must read the saved hook and have the saved weights sha256, else ``ValueError``
    naming both."""
    from ..load.saes import load_sae, registry, sae_hash, sae_hook
    from .vector import read_vector_file

    path, tensors, meta = read_vector_file(path, "condition")
    if not is_condition_file(meta):
        raise ValueError(f"{path} holds a steering vector, not a condition; load it with sas.load_vector")
    layer = meta.get("layer")
    if list(tensors) != [layer]:
        raise ValueError(f"{path}: a condition file holds one tensor, layer.{layer}; found {sorted(tensors)}")
    keep = {k: meta[k] for k in ("model", "name", "scope", "reduce", "hook_point", "settings") if k in meta}
    try:
        if meta["condition"] == "direction":
            return Condition("direction", layer, direction=tensors[layer], threshold=meta.get("threshold"), **keep)
        want = meta.get("sae") or {}
        if sae is None:
            if want.get("name") not in registry():
                raise ValueError(f"it names SAE {want.get('name')!r}, which is not in the registry; sas never follows a "
                                 "path found in a file: load that SAE yourself and pass sae=...")
            sae = load_sae(want["name"], model)
        problems = []
        if want.get("hook") != sae_hook(sae):
            problems.append(f"the SAE given reads {sae_hook(sae)!r}, the condition's SAE read {want.get('hook')!r}")
        elif want.get("sha256") != sae_hash(sae):
            problems.append(f"the SAE given ({_sae_name(sae)}) has other weights than the condition's "
                            f"({want.get('name')}; sha256 differs)")
        if problems:
            raise ValueError(f"it was built in SAE {want.get('name')!r}: " + "; ".join(problems)
                             + ". Pass the SAE it was built in")
        feats = meta.get("features") or {}
        return Condition("features", layer, features=[int(f) for f in feats], thresholds=list(feats.values()),
                         sae=sae, sae_name=want.get("name", ""), **keep)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: {e}") from e


# building from contrastive prompts
def _prompt_reads(model, prompts: list[str], cond_or_layer, sae=None, reduce: str = "mean"):
    """Per-prompt readings with the project's activation readers: for a direction, the mean residual over the
    prompt's tokens (or its last token) ``[n, d_model]``; for features, the per-token residuals of each prompt (a
    list of ``[t, d]``)."""
    from ..activations.residual import last_token_activations, prompt_activations
    from ..forward.run import encode

    layer = cond_or_layer.layer if isinstance(cond_or_layer, Condition) else cond_or_layer
    kind = cond_or_layer.kind if isinstance(cond_or_layer, Condition) else ("features" if sae is not None else
                                                                            "direction")
    if kind == "direction":
        reduce = cond_or_layer.reduce if isinstance(cond_or_layer, Condition) else reduce
        return kind, last_token_activations(model, prompts, [layer], reduce=reduce)[layer].float()
    acts = prompt_activations(model, prompts, hook_at(RESID_HOOK, layer), last_token_only=False)
    sizes = [len(ids) - 1 for ids in encode(model, prompts)]
    return kind, list(torch.split(acts, sizes))


def _prompt_fires(cond: Condition, kind: str, reads) -> torch.Tensor:
    fires = cond._reader()
    if kind == "direction":
        return fires(reads) > cond.threshold
    return torch.tensor([bool(fires(x).any()) for x in reads])


def _balanced_accuracy(fire_pos: torch.Tensor, fire_neg: torch.Tensor) -> float:
    return 0.5 * (fire_pos.float().mean().item() + (~fire_neg).float().mean().item())


def best_threshold(pos: torch.Tensor, neg: torch.Tensor) -> tuple[float, float]:
    """The threshold ``t`` that best separates scores ``pos [n]`` (should be > t) from ``neg [m]``: the midpoint
    between consecutive scores with the highest balanced accuracy, the highest such threshold on a tie (scores that
    do not separate give a condition that never fires, which the builder refuses, rather than one that always
    does). Returns ``(t, balanced accuracy)``."""
    values = torch.cat([pos, neg]).double().unique().sort().values
    cands = torch.cat([values[:1] - 1, (values[1:] + values[:-1]) / 2, values[-1:] + 1])
    tpr = (pos.double()[None, :] > cands[:, None]).double().mean(1)
    tnr = (neg.double()[None, :] <= cands[:, None]).double().mean(1)
    acc = 0.5 * (tpr + tnr)
    i = len(acc) - 1 - int(acc.flip(0).argmax())
    return float(cands[i]), float(acc[i])


def _split(texts: list[str], seed: int) -> tuple[list[str], list[str]]:
    """Fit and tuning halves, drawn at random (``seed``): prompts given in some order (by topic, by template) fall on
    both sides."""
    if len(texts) < 2:
        raise ValueError(f"{len(texts)} prompt(s) leave an empty fit or tuning half; give at least 2 on each side")
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    half = (len(texts) + 1) // 2
    return [texts[i] for i in order[:half]], [texts[i] for i in order[half:]]


def condition_from_texts(model, positive: Sequence[str], negative: Sequence[str], layer: int, sae=None,
                         scope: str = "prompt", name: str = "condition", n_features: int = 8,
                         reduce: str = "mean", seed: int = 0) -> Condition:
    """A condition that holds on prompts like ``positive`` and not on prompts like ``negative``.

    Each side's prompts are split at random (``seed``) into a fit half and a tuning half. Without ``sae``: CAST's
    form, the direction from the mean negative to the mean positive prompt on the fit half (each prompt read as its
    mean residual at ``layer``, BOS left out, or its last token: ``reduce``) and the threshold on the cosine with
    it that has the best balanced accuracy on the tuning half. With ``sae`` (an SAE of
    ``layer``): on the fit part, each feature's threshold on its largest activation over a prompt's tokens, and
    the features ranked by balanced accuracy (at most ``n_features``); on the tuning part, how many of them to keep
    (the condition holds where any of them fires). ``ValueError`` if it fires on no positive tuning prompt; a
    warning if it also fires on every negative one. ``settings`` records the tuning accuracy and firing rates."""
    from ..checks import text_list

    positive, negative = text_list(positive, "positive"), text_list(negative, "negative")
    (pf, pt), (nf, nt) = _split(positive, seed), _split(negative, seed)
    mname = model.cfg.model_name
    if sae is None:
        _, reads = _prompt_reads(model, pf + nf + pt + nt, layer, reduce=reduce)
        a, b, c = len(pf), len(pf) + len(nf), len(pf) + len(nf) + len(pt)
        cond = Condition("direction", layer, mname, name, scope, reduce,
                         direction=reads[:a].mean(0) - reads[a:b].mean(0))
        cos = cond._reader()
        cond.threshold, _ = best_threshold(cos(reads[b:c]), cos(reads[c:]))
        tune_pos, tune_neg = _prompt_fires(cond, "direction", reads[b:c]), _prompt_fires(cond, "direction", reads[c:])
    else:
        from ..activations.codes import encode
        from ..load.saes import sae_layer

        if sae_layer(sae) != layer:
            raise ValueError(f"the SAE reads layer {sae_layer(sae)} ({_sae_name(sae)}), not layer {layer}; pass an SAE "
                             f"of layer {layer} or build at layer {sae_layer(sae)}")
        _, reads = _prompt_reads(model, pf + nf + pt + nt, layer, sae)
        peak = torch.stack([encode(sae, x).float().max(0).values for x in reads]).cpu()  # [n_prompts, d_sae]
        a, b, c = len(pf), len(pf) + len(nf), len(pf) + len(nf) + len(pt)
        # candidates: features more often active on the positive fit prompts than on the negative ones
        gap = (peak[:a] > 0).float().mean(0) - (peak[a:b] > 0).float().mean(0)
        cands = [int(f) for f in gap.argsort(descending=True)[:4 * n_features] if gap[f] > 0]
        if not cands:
            raise ValueError(f"condition {name!r}: no feature of {_sae_name(sae)} is active more often on the positive "
                             "prompts than on the negative ones; the SAE does not see this condition at this layer")
        ranked = sorted(((*best_threshold(peak[:a, f], peak[a:b, f]), f) for f in cands), key=lambda r: -r[1])
        ranked = ranked[:n_features]
        best = None
        for k in range(1, len(ranked) + 1):  # how many features: chosen on the tuning part
            feats, ths = [f for _, _, f in ranked[:k]], [max(t, 0.0) for t, _, _ in ranked[:k]]
            fp = (peak[b:c, feats] > torch.tensor(ths)).any(1)
            fn = (peak[c:, feats] > torch.tensor(ths)).any(1)
            acc = _balanced_accuracy(fp, fn)
            if best is None or acc > best[0] + 1e-9:
                best = (acc, feats, ths, fp, fn)
        _, feats, ths, tune_pos, tune_neg = best
        cond = Condition("features", layer, mname, name, scope, features=feats, thresholds=ths, sae=sae)
    cond.settings = {"n_fit": [len(pf), len(nf)], "n_tuning": [len(pt), len(nt)],
                     "tuning_balanced_accuracy": round(_balanced_accuracy(tune_pos, tune_neg), 4),
                     "tuning_fires_positive": round(tune_pos.float().mean().item(), 4),
                     "tuning_fires_negative": round(tune_neg.float().mean().item(), 4)}
    if not tune_pos.any():
        raise ValueError(f"condition {name!r} ({cond.describe()}) fires on none of the {len(pt)} positive tuning "
                         "prompts: steering with it would do nothing. Give more or clearer positive prompts, or "
                         "another layer")
    if tune_neg.all():
        warnings.warn(f"condition {name!r} fires on every negative tuning prompt too: it does not tell them apart")
    return cond


# gating steering terms inside the forward pass
class Gate:
    """The state of one condition in one steering block: the hook that reads it and the wrapper that makes a
    term's edit only where it holds. ``fired``/``read``: rows (or tokens) where it held, and that it read."""

    def __init__(self, cond: Condition):
        self.cond, self.rows, self.tokens = cond, None, None
        self.fired = self.read = 0
        self._reader = cond._reader()  # the condition's weights, cut and cast once per block

    def reader(self) -> tuple[str, Callable]:
        cond = self.cond

        def hook(resid: torch.Tensor, hook=None) -> torch.Tensor:
            b = _BATCH.get()
            n_batch, n_pos, _ = resid.shape
            real, _ = _real_positions(n_batch, n_pos, resid.device)
            if cond.scope == "token":
                self.tokens = cond.decide(resid, real, self._reader)
                self.fired += int(self.tokens.sum())
                self.read += int((real >= 0).sum())
            elif b is None or b.offset == 0:  # the prompt's pass: decide once for each row
                self.rows = cond.decide(resid, real, self._reader)
                self.fired += int(self.rows.sum())
                self.read += n_batch
            return resid

        return cond.hook_name(), hook

    def mask(self, resid: torch.Tensor, layer: int) -> torch.Tensor:
        """``[batch, pos]`` bool: where the condition lets ``layer`` edit in this pass."""
        n_batch, n_pos, _ = resid.shape
        if self.cond.scope == "token":
            return self.tokens
        b = _BATCH.get()
        prompt_pass = b is None or b.offset == 0
        if prompt_pass and layer < self.cond.layer:  # the decision comes later in this pass
            return torch.zeros(n_batch, n_pos, dtype=torch.bool, device=resid.device)
        if self.rows is None or len(self.rows) != n_batch:
            raise RuntimeError(f"condition {self.cond.name!r} has no decision for this batch: a per-prompt condition "
                               "is decided in the prompt's forward pass; generate through sas.generate / the Decoder")
        return self.rows.to(resid.device)[:, None].expand(n_batch, n_pos)

    def wrap(self, fn: Callable, layer: int) -> Callable:
        def hook(resid: torch.Tensor, hook=None) -> torch.Tensor:
            out = fn(resid, hook=hook)
            return torch.where(self.mask(resid, layer)[..., None], out, resid)

        return hook
