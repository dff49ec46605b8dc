"""How good an SAE is, measured as the field does (Gemma Scope, SAEBench): the loss difference when its
reconstruction is spliced into the model (nats per token, with a bootstrap interval over rows), the KL divergence
to the clean model's next-token distribution, explained variance, L0, dead and dense features, and CE loss
recovered (which stays near 1 for Gemma even for a poor SAE: zero-ablating its large-mean residual is
catastrophic, so the denominator is huge; read the loss difference)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import torch

from ..activations.residual import hook_activations, prompt_activations, token_chunks
from ..steering.edits import replaced


@dataclass
class SAEMetrics:
    """Quality of an SAE on some text. ``ce_loss_recovered = (zero - spliced) / (zero - clean)``."""

    n_tokens: int
    explained_variance: float
    mean_l0: float
    dead_fraction: float
    n_ce_tokens: int = 0
    ce_loss_clean: float = float("nan")
    ce_loss_spliced: float = float("nan")
    ce_loss_zero: float = float("nan")
    ce_loss_recovered: float = float("nan")
    explained_variance_ab: float = float("nan")  # at the answer-letter token of A/B prompts
    explained_variance_sentiment: float = float("nan")  # on all tokens of sentiment prompts
    loss_delta: float = float("nan")  # spliced minus clean, nats per predicted token
    loss_delta_ci: tuple[float, float] = (float("nan"), float("nan"))  # 95% bootstrap over rows
    kl: float = float("nan")  # mean KL(clean || spliced) of the next-token distributions, nats
    kl_ci: tuple[float, float] = (float("nan"), float("nan"))
    dense_fraction: float = float("nan")  # features active on more than 10% of tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def reconstruction_metrics(sae, acts: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
    """Explained variance (around the mean of ``acts [n, d_in]``), mean L0 and the fraction of features never
    active on these rows."""
    sse, l0 = 0.0, 0.0
    counts = torch.zeros(sae.cfg.d_sae, device=sae.W_enc.device)
    mean = acts.mean(0)
    for i in range(0, len(acts), batch_size):
        x = acts[i:i + batch_size].to(sae.W_enc.device, sae.dtype)
        f = sae.encode(x)
        sse += (sae.decode(f) - x).float().pow(2).sum().item()
        counts += (f > 0).sum(0)
        l0 += (f > 0).sum().item()
    sst = (acts - mean).float().pow(2).sum().item()
    return {"n_tokens": len(acts), "explained_variance": 1 - sse / sst, "mean_l0": l0 / len(acts),
            "dead_fraction": (counts == 0).float().mean().item(),
            "dense_fraction": (counts > 0.1 * len(acts)).float().mean().item()}


def _bootstrap_mean(values: torch.Tensor, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values [rows]`` (rows resampled)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(values), (n, len(values)), generator=g)
    means = values[idx].mean(1)
    return means.quantile(0.025).item(), means.quantile(0.975).item()


@torch.no_grad()
def splice_metrics(model, sae, tokens: torch.Tensor, batch_size: int = 4) -> dict[str, float | tuple]:
    """The damage ``sae`` does when its reconstruction replaces its hook's activation at every position but the
    first (BOS), on unpadded rows ``tokens [n, pos]``: per row the mean next-token loss clean and spliced and the
    mean KL(clean || spliced), averaged over the ``pos - 1`` predicted tokens. Returns the means of
    ``loss_clean``, ``loss_spliced``, ``loss_delta`` and ``kl`` with 95% bootstrap intervals over rows."""
    hook = sae.cfg.metadata.hook_name
    clean_rows, spliced_rows, kl_rows = [], [], []
    for i in range(0, len(tokens), batch_size):
        batch = tokens[i:i + batch_size]
        target = batch[:, 1:]
        lp_clean = model(batch, return_type="logits")[:, :-1].float().log_softmax(-1)
        with replaced(model, hook, lambda act: sae(act.to(sae.W_enc.device, sae.dtype))):
            lp_splice = model(batch, return_type="logits")[:, :-1].float()
        lp_splice = lp_splice.log_softmax(-1)
        clean_rows.append(-lp_clean.gather(-1, target[..., None])[..., 0].mean(1))
        spliced_rows.append(-lp_splice.gather(-1, target[..., None])[..., 0].mean(1))
        kl_rows.append((lp_clean.exp() * (lp_clean - lp_splice)).sum(-1).mean(1))
        del lp_clean, lp_splice
    clean, spliced, kl = torch.cat(clean_rows), torch.cat(spliced_rows), torch.cat(kl_rows)
    delta = spliced - clean
    return {"n_rows": len(tokens), "n_predicted": int(len(tokens) * (tokens.shape[1] - 1)),
            "loss_clean": clean.mean().item(), "loss_spliced": spliced.mean().item(),
            "loss_delta": delta.mean().item(), "loss_delta_ci": _bootstrap_mean(delta),
            "kl": kl.mean().item(), "kl_ci": _bootstrap_mean(kl)}


@torch.no_grad()
def ce_losses(model, sae, tokens: torch.Tensor, batch_size: int = 4,
              which: tuple[str, ...] = ("clean", "spliced", "zero")) -> dict[str, float]:
    """Mean next-token loss on ``tokens [n, pos]``: ``clean``, with the SAE's reconstruction ``spliced`` in at its
    hook, and with that activation ``zero``-ablated; both edits at every position but the first (BOS)."""
    hook = sae.cfg.metadata.hook_name if sae is not None else None
    out = {}
    for name, fn in (("clean", None), ("spliced", lambda act: sae(act.to(sae.W_enc.device, sae.dtype))),
                     ("zero", torch.zeros_like)):
        if name not in which:
            continue
        total = 0.0
        for i in range(0, len(tokens), batch_size):
            batch = tokens[i:i + batch_size]
            with replaced(model, hook, fn) if fn else nullcontext():
                logits = model(batch, return_type="logits")
            # the loss in float32 even for a bfloat16 model, whose own loss is rounded to 3 significant digits
            total += torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten(),
                                                       reduction="sum").item()
        out[name] = total / (tokens.shape[0] * (tokens.shape[1] - 1))
    return out


def evaluate_sae(model, sae, texts: Iterable[str], n_tokens: int = 100_000, n_ce_tokens: int = 8192,
                 context: int = 128, batch_size: int = 16, ab_prompts: list[str] | None = None,
                 sentiment_prompts: list[str] | None = None) -> SAEMetrics:
    """Measure ``sae`` on ``texts``: explained variance, mean L0 and dead fraction on ``n_tokens`` non-BOS tokens,
    and the cross-entropy loss recovered (clean vs spliced vs zero-ablated) on the first ``n_ce_tokens``.
    With ``ab_prompts`` (ending in the answer letter) and ``sentiment_prompts``, also the explained variance at
    the answer-letter token and on the sentiment prompts' tokens."""
    tokens = token_chunks(model, texts, context, max_tokens=n_tokens)
    acts = hook_activations(model, tokens, sae.cfg.metadata.hook_name, batch_size)
    m = SAEMetrics(**reconstruction_metrics(sae, acts))
    if n_ce_tokens:
        ce_rows = tokens[:max(1, n_ce_tokens // (context - 1))]
        ce = ce_losses(model, sae, ce_rows)
        m.n_ce_tokens = ce_rows.numel() - len(ce_rows)
        m.ce_loss_clean, m.ce_loss_spliced, m.ce_loss_zero = ce["clean"], ce["spliced"], ce["zero"]
        m.ce_loss_recovered = (ce["zero"] - ce["spliced"]) / (ce["zero"] - ce["clean"])
        sp = splice_metrics(model, sae, ce_rows)
        m.loss_delta, m.loss_delta_ci, m.kl, m.kl_ci = sp["loss_delta"], sp["loss_delta_ci"], sp["kl"], sp["kl_ci"]
    if ab_prompts:
        m.explained_variance_ab = explained_variance_at(model, sae, ab_prompts, True)["explained_variance"]
    if sentiment_prompts:
        m.explained_variance_sentiment = explained_variance_at(model, sae, sentiment_prompts, False)["explained_variance"]
    return m


def explained_variance_at(model, sae, prompts: list[str], last_token_only: bool = True) -> dict[str, float]:
    """``reconstruction_metrics`` of ``sae`` on ``prompt_activations`` (explained variance around those rows' mean)."""
    return reconstruction_metrics(sae, prompt_activations(model, prompts, sae.cfg.metadata.hook_name, last_token_only))
