"""SAE-feature effects of steering vectors, and the linear map from a vector to its effects (the measurement step of
SAE-targeted steering, Chalnev, Siu and Conmy 2024, code ``slavachalnev/SAE-TS``).

As their ``src/sae_ts/ft_effects/multi_gpu.py`` (``worker``) and ``ft_effects/utils.py`` (``gen``,
``get_feature_acts``) do it: a unit steering direction (a decoder row of the SAE) is added at a fixed scale while
the model continues short prompts; the generated text is read back by the unsteered model and encoded by the SAE
at the steered layer; the *effect* is the mean code over the generated tokens minus that of unsteered generations.
``ft_effects/train.py`` then fits ``effect ~ x @ W + b`` (``LinearAdapter``) on unit directions ``x``.

Differences, for a CPU budget: greedy decoding (deterministic, no sampling noise), prompts are the first
``prompt_tokens`` tokens of passages of the given Wikipedia *training* text (never the held-out shards), the steering
is where sas steers in generation (``after_prompt``: the last prompt token and every new token), one fixed scale
(``alpha`` x the residual's centred RMS norm at the layer) instead of a per-vector loss target, only the generated
tokens are read, and the linear map is fitted in closed form (ridge, chosen on a validation split) instead of Adam.
Its fit is reported as the explained variance of held-out vectors' effects, with a bootstrap interval.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..activations.sae_cache import cached, read_cached, write_cached
from ..forward.generate import generate_tokens
from ..forward.run import fast_layout, pad_id, pad_left, run_resid
from ..hooks import template_of
from ..load.prompts import bos_ids
from ..load.saes import sae_hook, sae_layer
from .steer import Term, steer_terms
from .vector import SteeringVector

VERSION = 1
SOLVES = ("sae_ts", "pinv")
RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # relative ridge strengths tried; 1 to 10 win on 0.5k-1k noisy vectors


@dataclass
class EffectMap:
    """``effect(x) = x @ W + b`` for unit directions ``x [d_model]`` added at ``scale``: ``W [d_model, d_sae]``,
    ``b [d_sae]``. ``explained_variance`` (with ``ev_interval``, a 95% bootstrap interval over held-out vectors) is the
    fit on the effects of ``n_test`` directions not used to fit it."""

    W: torch.Tensor
    b: torch.Tensor
    scale: float
    explained_variance: float
    ev_interval: tuple[float, float]
    meta: dict = field(default_factory=dict)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted effects ``[n, d_sae]`` of unit directions ``x [n, d_model]``."""
        return x.float() @ self.W + self.b

    def solve(self, target: torch.Tensor, solve: str = "sae_ts") -> torch.Tensor:
        """The unit residual direction ``[d_model]`` that moves the features of ``target [d_sae]`` (a desired effect:
        non-zero on the chosen features) with the fewest side effects.

        ``"sae_ts"`` is SAE-TS's own step (``baselines/analysis.py`` ``single_step_steer``): the direction whose
        predicted effect has the largest inner product with the target, ``W @ target`` normalised, minus the
        normalised ``W @ b``, the part of every steering vector's effect that is not specific to it.
        ``"pinv"`` (their ``pinverse_steer``): the least-squares ``x`` with ``x @ W + b`` closest to the target
        (scaled to unit norm first), i.e. the smallest squared side effects on all other features.
        """
        if solve not in SOLVES:
            raise ValueError(f"solve must be one of {SOLVES}, not {solve!r}")
        t = target.float()
        if not t.any():
            raise ValueError("the target effect is zero: choose at least one feature to move")
        if solve == "sae_ts":
            s = self.W @ t
            s = s / s.norm()
            bias = self.W @ self.b
            x = s - bias / bias.norm() if bias.norm() > 0 else s
        else:
            x = (t / t.norm() - self.b) @ torch.linalg.pinv(self.W)
        return x / x.norm()


def _prompts(model, texts: Sequence[str], n: int, prompt_tokens: int) -> list[list[int]]:
    """The first ``prompt_tokens`` tokens (after BOS) of the first ``n`` passages of ``texts`` long enough."""
    tok, bos = model.tokenizer, bos_ids(model)
    out = []
    for text in texts:
        for para in text.split("\n"):
            ids = tok(para, add_special_tokens=False).input_ids
            if len(ids) >= prompt_tokens + 8:
                out.append(bos + ids[:prompt_tokens])
                break
        if len(out) == n:
            return out
    raise ValueError(f"only {len(out)} passages of at least {prompt_tokens + 8} tokens in the texts; {n} needed: "
                     "pass more text")


@torch.no_grad()
def _read(model, sae, seqs: list[list[int]], n_new: int) -> torch.Tensor:
    """Mean SAE code ``[d_sae]`` of the last ``n_new`` tokens of each sequence, read by the unsteered model."""
    tokens, mask, left = pad_left(seqs, pad_id(model))
    resid = run_resid(model, tokens, mask, left, stop_at_layer=sae_layer(sae) + 1)
    z = sae.encode(resid[:, -n_new:].reshape(-1, resid.shape[-1]).to(sae.dtype)).float()
    return z.mean(0)


@torch.no_grad()
def measure_effects(model, sae, directions: torch.Tensor, prompts: list[list[int]], scale: float, n_new: int = 8,
                    batch_rows: int = 64, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(effects [n, d_sae], baseline [d_sae])``: for each direction ``[n, d_model]`` (added at ``scale`` at layer
    of ``sae`` while greedily generating ``n_new`` tokens from every prompt), the mean SAE code of the generated
    tokens minus that of unsteered generation."""
    from tqdm.auto import tqdm

    fast_layout(model)
    layer, template = sae_layer(sae), template_of(sae_hook(sae))
    n_p = len(prompts)

    def run(dirs: torch.Tensor | None, n_rows_dirs: int) -> list[list[int]]:
        rows = prompts * n_rows_dirs
        if dirs is None:
            return generate_tokens(model, rows, n_new, stop_at_eos=False)
        terms = []  # rows j * n_p ... (j + 1) * n_p steer with direction j
        for j, d in enumerate(dirs):
            strength = torch.zeros(len(rows))
            strength[j * n_p:(j + 1) * n_p] = scale
            vec = SteeringVector({layer: d}, model.cfg.model_name, "effect_probe", hook_point=template)
            terms.append(Term(vec, strength, [layer], "after_prompt"))
        with steer_terms(model, terms):
            return generate_tokens(model, rows, n_new, stop_at_eos=False)

    base_new = run(None, 1)
    baseline = _read(model, sae, [p + g for p, g in zip(prompts, base_new)], n_new)
    per_batch = max(1, batch_rows // n_p)
    effects = torch.zeros(len(directions), sae.cfg.d_sae)
    for i in tqdm(range(0, len(directions), per_batch), desc="effects", disable=not progress, mininterval=10):
        d = directions[i:i + per_batch]
        new = run(d, len(d))
        for j in range(len(d)):
            seqs = [p + g for p, g in zip(prompts, new[j * n_p:(j + 1) * n_p])]
            effects[i + j] = _read(model, sae, seqs, n_new) - baseline
    return effects, baseline


@torch.no_grad()
def explained_variance(y: torch.Tensor, pred: torch.Tensor, mean: torch.Tensor) -> float:
    """``1 - SSE / SST`` of predictions ``[n, d]`` of ``y [n, d]``, SST around ``mean [d]``."""
    return 1.0 - float(((y - pred) ** 2).sum() / ((y - mean) ** 2).sum().clamp(min=1e-30))


def fit_effect_map(x: torch.Tensor, y: torch.Tensor, n_test: int, seed: int = 0,
                   ridges=RIDGES) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Fit ``y ~ x @ W + b`` (ridge, its strength relative to the mean eigenvalue of ``x^T x``, chosen on a validation
    fifth of the training rows) on all but the last ``n_test`` rows; report the explained variance on those.
    Returns ``(W [d_model, d_sae], b [d_sae], fit)``."""
    x, y = x.double(), y.double()
    xtr, ytr, xte, yte = x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]

    def ridge(xa, ya, lam):
        xm, ym = xa.mean(0), ya.mean(0)
        xc = xa - xm
        g = xc.T @ xc
        g = g + lam * g.diagonal().mean() * torch.eye(len(g), dtype=g.dtype)
        w = torch.linalg.solve(g, xc.T @ (ya - ym))
        return w, ym - xm @ w

    n_val = max(1, len(xtr) // 5)
    val = {}
    for lam in ridges:
        w, b = ridge(xtr[:-n_val], ytr[:-n_val], lam)
        val[lam] = explained_variance(ytr[-n_val:], xtr[-n_val:] @ w + b, ytr[:-n_val].mean(0))
    lam = max(val, key=val.get)
    w, b = ridge(xtr, ytr, lam)
    pred = xte @ w + b
    ev = explained_variance(yte, pred, ytr.mean(0))
    g = torch.Generator().manual_seed(seed)
    boots = []
    for _ in range(1000):  # vectors resampled: the interval is over which directions were held out
        i = torch.randint(0, n_test, (n_test,), generator=g)
        boots.append(explained_variance(yte[i], pred[i], ytr.mean(0)))
    lo, hi = torch.tensor(boots, dtype=torch.double).quantile(torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
    return w.float(), b.float(), {"explained_variance": ev, "ev_interval": [lo, hi], "ridge": lam, "ridges": list(ridges),
                                  "validation_ev": {str(k): v for k, v in val.items()},
                                  "n_train": len(xtr), "n_test": n_test}


def _settings(model, sae, n_vectors, n_prompts, prompt_tokens, n_new, alpha, seed) -> dict:
    # no dtype: a map measured with the model in one dtype serves it in the other
    return {"version": VERSION, "model": model.cfg.model_name, "hook": sae_hook(sae),
            "n_vectors": n_vectors, "n_prompts": n_prompts, "prompt_tokens": prompt_tokens, "n_new": n_new,
            "alpha": alpha, "seed": seed}


def _missing(sae, settings: dict) -> str:
    n = settings["n_vectors"]
    return (f"no effect map for SAE {getattr(sae, 'sas_name', '?')!r} with settings {settings}: compute it once "
            f"(about {n * 0.7 / 60:.0f} CPU-minutes for a 4k SAE on gemma-3-270m) with `python scripts/sae_stats.py "
            f"--what effect_map --sae {getattr(sae, 'sas_name', 'NAME')} --corpus ../shared/data/corpus/enwiki-2014 "
            f"--vectors {n}` or sas.steering.effects.effect_map(model, sae, texts=<Wikipedia training texts>)")


def missing_effect_map(model, sae, n_vectors: int = 1024) -> str | None:
    """Why :func:`effect_map` with its default settings and ``n_vectors`` would stop for want of a cached map
    (and of ``texts``), naming the command that computes it; None if the map is cached."""
    d = {k: p.default for k, p in inspect.signature(effect_map).parameters.items()}
    s = _settings(model, sae, n_vectors, d["n_prompts"], d["prompt_tokens"], d["n_new"], d["alpha"], d["seed"])
    return None if read_cached(sae, "effect_map", s) is not None else _missing(sae, s)


def effect_map(model, sae, texts: Sequence[str] | None = None, n_vectors: int = 1024, n_prompts: int = 8,
               prompt_tokens: int = 8, n_new: int = 8, alpha: float = 0.4, seed: int = 0, rebuild: bool = False,
               progress: bool = False) -> EffectMap:
    """The :class:`EffectMap` of ``sae``'s layer, cached beside the SAE with its weights' sha256.

    Without a cached map, ``texts`` (Wikipedia *training* text, e.g. the ``enwiki-2014`` shards; never held-out
    text) is required: ``n_vectors`` random decoder rows (10% held out for the fit) are measured on ``n_prompts``
    prompts of ``prompt_tokens`` tokens, ``n_new`` greedy tokens each, at ``alpha`` x the residual's centred RMS
    norm (from the prompts). ``python scripts/sae_stats.py --what effect_map --sae NAME --corpus DIR`` does this from the shell (add
    ``--dtype bfloat16`` on a CPU with AVX-512 BF16, where it is faster).
    """
    settings = _settings(model, sae, n_vectors, n_prompts, prompt_tokens, n_new, alpha, seed)
    hit = None if rebuild else read_cached(sae, "effect_map", settings)
    if hit is None and texts is None:
        raise FileNotFoundError(_missing(sae, settings))

    if hit is not None and hit[1].get("ridges") != list(RIDGES) and "effects" in hit[0]:
        # fitted with another ridge grid: refit from the stored effects (seconds; nothing is measured again)
        tensors, meta = hit
        x = sae.W_dec[tensors["features"]].detach().float()
        w, b, fit = fit_effect_map(x / x.norm(dim=-1, keepdim=True), tensors["effects"].float(), meta["n_test"], seed)
        keep = {k: v for k, v in meta.items() if k not in ("kind", "settings", "sae_sha256", "sae_name", "written")}
        _, meta = write_cached(sae, "effect_map", settings, {**tensors, "W": w, "b": b}, {**keep, **fit})
        hit = ({**tensors, "W": w, "b": b}, meta)

    def build():
        prompts = _prompts(model, list(texts), n_prompts, prompt_tokens)
        tokens, mask, left = pad_left(prompts, pad_id(model))
        resid = run_resid(model, tokens, mask, left, stop_at_layer=sae_layer(sae) + 1)[:, 1:].reshape(-1, sae.cfg.d_in)
        scale = alpha * float((resid - resid.mean(0)).norm(dim=-1).pow(2).mean().sqrt())
        g = torch.Generator().manual_seed(seed)
        feats = torch.randperm(sae.cfg.d_sae, generator=g)[:n_vectors]
        x = sae.W_dec[feats].detach().float()
        x = x / x.norm(dim=-1, keepdim=True)
        y, baseline = measure_effects(model, sae, x, prompts, scale, n_new, progress=progress)
        n_test = max(2, n_vectors // 10)
        w, b, fit = fit_effect_map(x, y, n_test, seed)
        return ({"W": w, "b": b, "features": feats, "effects": y.half(), "baseline": baseline},
                {"scale": scale, **fit, "model_dtype": str(model.cfg.dtype),
                 "prompts": [model.tokenizer.decode(p[1:]) for p in prompts]})

    tensors, meta = hit if hit is not None else cached(sae, "effect_map", settings, build, rebuild, what="the effect map")
    return EffectMap(tensors["W"], tensors["b"], float(meta["scale"]), float(meta["explained_variance"]),
                     tuple(meta["ev_interval"]), meta)
