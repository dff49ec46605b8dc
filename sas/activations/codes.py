"""SAE codes of residual activations: encode in batches, firing frequencies, firing counts over a corpus."""

from __future__ import annotations

import torch

from ..forward.run import read_hooks, token_mask


@torch.no_grad()
def encode(sae, acts: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Sparse codes of activations ``[n, d_in]`` in batches: ``[n, d_sae]`` (dense; n * d_sae * 4 bytes)."""
    return torch.cat([sae.encode(acts[i:i + batch_size].to(sae.W_enc.device, sae.dtype))
                      for i in range(0, len(acts), batch_size)])


@torch.no_grad()
def feature_frequency(sae, acts: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Fraction of the rows of ``acts [n, d_in]`` on which each feature is active: ``[d_sae]``."""
    counts = torch.zeros(sae.cfg.d_sae, device=sae.W_enc.device)
    for i in range(0, len(acts), batch_size):
        counts += (sae.encode(acts[i:i + batch_size].to(sae.W_enc.device, sae.dtype)) > 0).sum(0).float()
    return counts / max(len(acts), 1)


@torch.no_grad()
def firing_counts(model, saes: dict[str, object], tokens: torch.Tensor,
                  batch_size: int = 16, progress: bool = False) -> tuple[dict[str, torch.Tensor], int]:
    """How many token positions each feature of each SAE fires on, over ``tokens [n, pos]`` (BOS and other
    special tokens left out), in one streamed pass of the model up to the deepest hook of ``saes``
    ({name: SAE}). Memory stays at one batch, so dead features can be counted over a million tokens.
    Returns ({name: counts [d_sae]}, number of positions counted)."""
    from tqdm.auto import tqdm

    hooks = {n: sae.cfg.metadata.hook_name for n, sae in saes.items()}
    counts = {n: torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=sae.W_enc.device) for n, sae in saes.items()}
    n_pos = 0
    for i in tqdm(range(0, len(tokens), batch_size), desc="firing counts", disable=not progress, mininterval=10):
        batch = tokens[i:i + batch_size]
        mask = token_mask(model, batch)
        cache = read_hooks(model, batch, hooks.values())
        for n, sae in saes.items():
            act = cache[hooks[n]]
            counts[n] += (sae.encode(act[mask.to(act.device)].to(sae.W_enc.device, sae.dtype)) > 0).sum(0)
        n_pos += int(mask.sum())
    return {n: c.cpu() for n, c in counts.items()}, n_pos


def decoder_direction(sae, feature: int) -> torch.Tensor:
    """The decoder row of ``feature``: ``[d_in]``, the direction the feature writes into the residual stream."""
    if not 0 <= feature < sae.cfg.d_sae:
        raise IndexError(f"feature {feature} out of range: this SAE has {sae.cfg.d_sae} features")
    return sae.W_dec[feature].detach()
