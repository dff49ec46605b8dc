"""Likelihood of text under the model as it is (steered inside a steer block): continuation NLL, perplexity."""

from __future__ import annotations

import torch

from ..load.device import block_device
from .run import encode, pad_id, pad_left, run_resid, target_logprobs


@torch.inference_mode()
def continuation_nll(model, prompts: list[str], continuations: list[str], batch_size: int = 16) -> torch.Tensor:
    """Summed negative log-likelihood and token count of each continuation given its prompt,
    under the model as it is (steered if called in a steer block). Returns [n, 2] (nll, n_tokens)."""
    rows = []
    for i in range(0, len(prompts), batch_size):
        p_ids = encode(model, prompts[i:i + batch_size])
        c_ids = [model.tokenizer(c, add_special_tokens=False).input_ids for c in continuations[i:i + batch_size]]
        seqs = [p + c for p, c in zip(p_ids, c_ids)]
        tokens, mask, left_pad = pad_left(seqs, pad_id(model), block_device(model))
        resid = run_resid(model, tokens, mask, left_pad)
        n = tokens.shape[1]
        rows += [(0.0, 0)] * len(c_ids)
        has = [(j, len(c)) for j, c in enumerate(c_ids) if c]
        if not has:
            continue
        # every continuation's positions of the batch at once, each predicted from one position earlier
        logp = target_logprobs(model, torch.cat([resid[j, n - k - 1:n - 1] for j, k in has]),
                               torch.cat([tokens[j, n - k:] for j, k in has]))
        for (j, k), part in zip(has, logp.split([k for _, k in has])):
            rows[i + j] = (-part.sum().item(), k)
    return torch.tensor(rows, dtype=torch.float64, device="cpu")  # host-side results


def perplexity(model, texts: list[str], batch_size: int = 8, max_tokens: int = 256) -> float:
    """Token-level perplexity of ``texts`` (each cut to ``max_tokens``), under the model as it is."""
    ids = [s[:max_tokens] for s in encode(model, texts, prepend_bos=False)]
    # score every token after the first, conditioned on BOS + the tokens before it
    conts = [model.tokenizer.decode(s[1:]) for s in ids]
    heads = [model.tokenizer.decode(s[:1]) for s in ids]
    nll = continuation_nll(model, heads, conts, batch_size)
    return float(torch.exp(nll[:, 0].sum() / nll[:, 1].sum()))
