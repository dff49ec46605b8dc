"""How good an SAE is: explained variance, L0, dead features, CE loss recovered (sae-lens SAEs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

import torch

from ..activations.residual import hook_activations, prompt_activations, token_chunks


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def reconstruction_metrics(sae, acts: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
    """Explained variance (around the mean of ``acts [n, d_in]``), mean L0 and the fraction of features never
    active on these rows."""
    sse, fired, l0 = 0.0, torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=sae.W_enc.device), 0.0
    mean = acts.mean(0)
    for i in range(0, len(acts), batch_size):
        x = acts[i:i + batch_size].to(sae.W_enc.device, sae.dtype)
        f = sae.encode(x)
        sse += (sae.decode(f) - x).pow(2).sum().item()
        fired |= (f > 0).any(0)
        l0 += (f > 0).sum().item()
    sst = (acts - mean).pow(2).sum().item()
    return {"n_tokens": len(acts), "explained_variance": 1 - sse / sst, "mean_l0": l0 / len(acts),
            "dead_fraction": 1 - fired.float().mean().item()}


@torch.no_grad()
def ce_losses(model, sae, tokens: torch.Tensor, batch_size: int = 4,
              which: tuple[str, ...] = ("clean", "spliced", "zero")) -> dict[str, float]:
    """Mean next-token loss on ``tokens [n, pos]``: ``clean``, with the SAE's reconstruction ``spliced`` in at its
    hook, and with that activation ``zero``-ablated; both edits at every position but the first (BOS)."""
    hook = sae.cfg.metadata.hook_name if sae is not None else None

    def splice(act, hook):
        act[:, 1:] = sae(act[:, 1:].to(sae.W_enc.device, sae.dtype)).to(act.device, act.dtype)
        return act

    def zero(act, hook):
        act[:, 1:] = 0
        return act

    out = {}
    for name, fn in (("clean", None), ("spliced", splice), ("zero", zero)):
        if name not in which:
            continue
        total = 0.0
        for i in range(0, len(tokens), batch_size):
            batch = tokens[i:i + batch_size]
            logits = model.run_with_hooks(batch, return_type="logits", fwd_hooks=[(hook, fn)] if fn else [])
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
    tokens = token_chunks(model.tokenizer, texts, context, max_tokens=n_tokens)
    acts = hook_activations(model, tokens, sae.cfg.metadata.hook_name, batch_size)
    m = SAEMetrics(**reconstruction_metrics(sae, acts))
    if n_ce_tokens:
        ce_rows = tokens[:max(1, n_ce_tokens // (context - 1))]
        ce = ce_losses(model, sae, ce_rows)
        m.n_ce_tokens = ce_rows.numel() - len(ce_rows)
        m.ce_loss_clean, m.ce_loss_spliced, m.ce_loss_zero = ce["clean"], ce["spliced"], ce["zero"]
        m.ce_loss_recovered = (ce["zero"] - ce["spliced"]) / (ce["zero"] - ce["clean"])
    if ab_prompts:
        m.explained_variance_ab = explained_variance_at(model, sae, ab_prompts, True)["explained_variance"]
    if sentiment_prompts:
        m.explained_variance_sentiment = explained_variance_at(model, sae, sentiment_prompts, False)["explained_variance"]
    return m


def explained_variance_at(model, sae, prompts: list[str], last_token_only: bool = True) -> dict[str, float]:
    """``reconstruction_metrics`` of ``sae`` on ``prompt_activations`` (explained variance around those rows' mean)."""
    return reconstruction_metrics(sae, prompt_activations(model, prompts, sae.cfg.metadata.hook_name, last_token_only))
