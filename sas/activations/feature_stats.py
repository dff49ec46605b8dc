"""Per-feature activation statistics of an SAE over text: firing frequency, mean active value, maximum.

Clamping (``edit="clamp"``) sets a feature to a multiple of its *typical active value*, the mean of its non-zero
activations over text; the statistics are computed once per SAE over the held-out Wikipedia sample shipped with
sas (``load_text_sample()``, measurement only) and cached (:mod:`sas.activations.sae_cache`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..forward.run import read_hooks, token_mask
from ..load.saes import sae_hook
from .residual import token_chunks
from .sae_cache import cached

VERSION = 1


@dataclass
class FeatureStats:
    """``frequency, mean_active, max_active [d_sae]`` over ``n_positions`` token positions (BOS and special tokens
    left out)."""

    frequency: torch.Tensor
    mean_active: torch.Tensor
    max_active: torch.Tensor
    n_positions: int

    def typical(self) -> torch.Tensor:
        """The typical active value of each feature ``[d_sae]`` (its mean non-zero activation; 0 if never active)."""
        return self.mean_active


@torch.no_grad()
def compute_feature_stats(model, sae, texts: Sequence[str], max_tokens: int = 50_000, context: int = 128,
                          batch_size: int = 16) -> FeatureStats:
    """The statistics of ``sae`` over ``texts`` (cut into ``context``-token rows, at most ``max_tokens``)."""
    hook = sae_hook(sae)
    tokens = token_chunks(model, list(texts), context, max_tokens)
    d = sae.cfg.d_sae
    counts, sums, maxes = torch.zeros(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64), torch.zeros(d)
    n = 0
    for i in range(0, len(tokens), batch_size):
        batch = tokens[i:i + batch_size]
        act = read_hooks(model, batch, [hook])[hook]
        z = sae.encode(act[token_mask(model, batch).to(act.device)].to(sae.dtype)).float()
        counts += (z > 0).sum(0)
        sums += z.sum(0, dtype=torch.float64)
        maxes = torch.maximum(maxes, z.max(0).values if len(z) else maxes)
        n += len(z)
    if n == 0:
        raise ValueError("no tokens to measure feature statistics on: pass non-empty texts")
    return FeatureStats((counts / n).float(), (sums / counts.clamp(min=1)).float(), maxes, n)


def feature_stats(model, sae, texts: Sequence[str] | None = None, max_tokens: int = 50_000,
                  rebuild: bool = False) -> FeatureStats:
    """The :class:`FeatureStats` of ``sae``, cached per SAE; computed on first use over ``texts`` (default: the
    shipped held-out Wikipedia sample) in about a minute on one core, with a warning saying so."""
    from ..load.data import data_hash, load_text_sample

    texts = load_text_sample() if texts is None else list(texts)
    settings = {"version": VERSION, "model": model.cfg.model_name, "dtype": str(model.cfg.dtype),
                "hook": sae_hook(sae), "texts": data_hash(texts), "max_tokens": max_tokens}

    def build():
        st = compute_feature_stats(model, sae, texts, max_tokens)
        return ({"frequency": st.frequency, "mean_active": st.mean_active, "max_active": st.max_active},
                {"n_positions": st.n_positions})

    tensors, meta = cached(sae, "feature_stats", settings, build, rebuild, what="activation statistics")
    return FeatureStats(tensors["frequency"], tensors["mean_active"], tensors["max_active"], int(meta["n_positions"]))
