"""Generation with a KV cache and left padding; steering hooks active in the caller apply."""

from __future__ import annotations

import math

import torch

from ..checks import text_list
from ..load.device import block_device
from .run import check_context, encode, logits_at, new_cache, pad_id, pad_left, run_resid


def _sample(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int, top_p: float,
            generator) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(-1)
    # restrict to the top k before anything else: sorting all 262k logits every step is slow
    vals, idx = logits.float().topk(min(top_k, logits.shape[-1]), dim=-1)
    probs = torch.softmax(vals / temperature, dim=-1)
    if top_p < 1.0:
        cum = probs.cumsum(-1)
        probs = probs * ((cum - probs) < top_p)
        probs = probs / probs.sum(-1, keepdim=True)
    # drawn on the CPU with CPU generators: a seed gives the same text on a GPU as here ([batch, top_k] is small)
    probs = probs.cpu()
    if isinstance(generator, list):  # one generator per row: a row's text does not depend on its batch
        choice = torch.cat([torch.multinomial(probs[i:i + 1], 1, generator=g) for i, g in enumerate(generator)])
    else:
        choice = torch.multinomial(probs, 1, generator=generator)
    choice = choice.to(idx.device)
    return idx.gather(-1, choice)[:, 0]


def _check_sampling(max_new_tokens, do_sample: bool, temperature, top_k, top_p) -> None:
    """Clear errors for sampling settings that torch.multinomial would fail on, or sample wrongly with."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, not {max_new_tokens!r}")
    if not do_sample:
        return
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, not {temperature!r} (a negative one samples the "
                         "inverted distribution); for greedy decoding pass do_sample=False")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, not {top_k!r}")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], not {top_p!r} (1 keeps the whole top-k distribution)")


class Decoder:
    """The shared decode step: a left-padded batch of token-id prompts with a KV cache. ``logits()`` runs the
    pending tokens and returns the next-token logits ``[batch, vocab]``; ``advance(tokens [batch])`` feeds the
    chosen tokens. Steering hooks active in the caller apply to every step."""

    def __init__(self, model, prompts: list[list[int]], max_new_tokens: int):
        self.model, self.device = model, block_device(model)
        self.tokens, self.mask, self.left_pad = pad_left(prompts, pad_id(model), self.device)
        check_context(model, self.tokens.shape[1] + max_new_tokens, f"the longest prompt ({self.tokens.shape[1]} "
                      f"tokens) plus max_new_tokens={max_new_tokens}")
        self.cache = new_cache(model, len(prompts))

    def logits(self) -> torch.Tensor:
        resid = run_resid(self.model, self.tokens, self.mask, self.left_pad, self.cache)
        return logits_at(self.model, resid[:, -1])

    def advance(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens[:, None].to(self.device)
        self.mask = torch.ones_like(self.tokens)


@torch.inference_mode()
def generate_tokens(model, prompts: list[list[int]], max_new_tokens: int = 32, do_sample: bool = False,
                    temperature: float = 1.0, top_k: int = 50, top_p: float = 1.0,
                    seed: int | list[int] | None = None, stop_at_eos: bool = True) -> list[list[int]]:
    """Generate from token-id prompts with a KV cache. Returns the new token ids of each prompt.

    ``seed``: one seed for the batch, or one per prompt (then each row samples from its own generator, so a
    prompt with its seed gives the same text in any batch, with any steering strengths beside it).

    Steering hooks active in the caller apply: ``after_prompt`` steers the last prompt token
    (so the first new token is steered) and every new token.
    """
    _check_sampling(max_new_tokens, do_sample, temperature, top_k, top_p)
    dec = Decoder(model, prompts, max_new_tokens)
    n = len(prompts)
    if isinstance(seed, (list, tuple)):
        if len(seed) != n:
            raise ValueError(f"got {len(seed)} seeds for {n} prompts; give one seed, or one per prompt")
        gen = [torch.Generator().manual_seed(int(s)) for s in seed]
    else:
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
    eos = model.tokenizer.eos_token_id
    out = torch.zeros((n, 0), dtype=torch.long, device=dec.device)
    done = torch.zeros(n, dtype=torch.bool, device=dec.device)
    for _ in range(max_new_tokens):
        nxt = _sample(dec.logits(), do_sample, temperature, top_k, top_p, gen)
        if stop_at_eos and eos is not None:
            nxt = torch.where(done, torch.full_like(nxt, pad_id(model)), nxt)
            done |= nxt == eos
        out = torch.cat([out, nxt[:, None]], dim=1)
        if done.all():
            break
        dec.advance(nxt)
    result = []
    for row, d in zip(out.tolist(), done.tolist()):
        if stop_at_eos and eos in row:
            row = row[:row.index(eos)]
        result.append(row)
    return result


def generate(model, prompts: str | list[str], max_new_tokens: int = 32, batch_size: int = 16,
             **kwargs) -> list[str]:
    """Continue each prompt; returns the new text only. Keyword arguments as :func:`generate_tokens`.

    Runs inside any active ``steer(...)`` block, so ``with steer(model, v, 4): generate(model, p)``
    generates steered text.
    """
    prompts = [prompts] if isinstance(prompts, str) else text_list(prompts, "prompts")
    seeds = kwargs.pop("seed", None)
    out = []
    for i in range(0, len(prompts), batch_size):
        ids = encode(model, prompts[i:i + batch_size])
        seed = seeds[i:i + batch_size] if isinstance(seeds, (list, tuple)) else seeds
        new = generate_tokens(model, ids, max_new_tokens, seed=seed, **kwargs)
        out += model.tokenizer.batch_decode(new, skip_special_tokens=True)
    return out
