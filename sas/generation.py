"""Fast forward passes and generation on a HookedTransformer, with padding and a KV cache.

Only the logits that are needed are computed: with a 262k vocabulary the unembedding dominates
the cost of a small model (STACK.md), so activations never build logits and generation builds
them for the last position only.
"""

from __future__ import annotations

import torch
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from .steering import Batch, batch_positions


def pad_left(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad token lists. Returns ``tokens`` [batch, pos], ``attention_mask`` [batch, pos], ``left_pad`` [batch]."""
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("cannot run an empty prompt or an empty batch")
    n = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, n - len(s):] = torch.tensor(s)
        mask[i, n - len(s):] = 1
    return tokens, mask, n - mask.sum(1)


def encode(model, texts: list[str], prepend_bos: bool = True) -> list[list[int]]:
    """Token ids of each text (BOS first unless ``prepend_bos=False``)."""
    tok = model.tokenizer
    # models whose tokenizer adds no BOS (SmolLM2) set default_prepend_bos=False
    prepend_bos = prepend_bos and model.cfg.default_prepend_bos
    bos = [tok.bos_token_id] if prepend_bos and tok.bos_token_id is not None else []
    return [bos + tok(t, add_special_tokens=False).input_ids for t in texts]


def pad_id(model) -> int:
    tok = model.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def _vocab_major_W_U(model) -> torch.Tensor:
    """``W_U.T`` [d_vocab, d_model], contiguous, made on first use and remade if ``W_U`` changes."""
    w = model.W_U
    key = (w.data_ptr(), w._version)
    cached = getattr(model, "_sas_W_U_rows", None)
    if cached is None or cached[0] != key:
        with torch.inference_mode(False), torch.no_grad():
            cached = (key, w.detach().T.contiguous())
        model._sas_W_U_rows = cached
    return cached[1]


def logits_at(model, resid: torch.Tensor) -> torch.Tensor:
    """Logits [..., d_vocab] from final-block residuals [..., d_model] (ln_final, unembed, softcap).

    The unembedding dominates a small model's step (262k vocabulary). For one or two rows ``x @ W_U`` in
    W_U's own layout is fastest; from four rows on, a vocabulary-major copy of W_U (made once, as much
    memory as W_U: 671 MB on gemma-3-270m) in 4096-row chunks is about 1.4x faster (batched generation,
    A/B scoring), measured on one core.
    """
    x = model.ln_final(resid)
    if x.numel() // x.shape[-1] >= 4:
        w = _vocab_major_W_U(model)
        logits = torch.cat([torch.nn.functional.linear(x, w[i:i + 4096]) for i in range(0, w.shape[0], 4096)], -1)
    else:
        logits = x @ model.W_U  # TL 3.9's Unembed copies W_U.T on every call
    if model.b_U.any():  # zero for most models: skip a [rows, d_vocab] add
        logits = logits + model.b_U
    cap = model.cfg.output_logits_soft_cap
    return cap * torch.tanh(logits / cap) if cap and cap > 0 else logits


def new_cache(model, n_batch: int) -> TransformerLensKeyValueCache:
    return TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, n_batch)


def fast_layout(model) -> None:
    """Store the weights of a HookedTransformer in the layout its forward pass asks for.

    TL 3.9 transposes and copies each block weight on every call (``W_gate.T.contiguous()``, a
    reshape of ``W_Q``): about 40% of a generation step on gemma-3-270m. Each weight becomes a view
    of a tensor that already has that layout, so those copies are no-ops. Values, shapes and results
    are unchanged (the matmuls see the same operands; logits are bitwise equal). Idempotent.
    ``W_U`` keeps its layout: :func:`logits_at` computes ``x @ W_U``, which at batch 1 is about 1.6x
    faster in it than in the transposed one.
    """
    if getattr(model, "_sas_fast_layout", False):
        return
    with torch.inference_mode(False), torch.no_grad():  # normal tensors: the model may be trained later
        for block in model.blocks:
            attn, mlp = block.attn, block.mlp
            for name in ("W_Q", "W_K", "W_V", "_W_K", "_W_V"):  # [head, d_model, d_head] -> (head d_head) d_model
                p = attn._parameters.get(name)
                if p is not None and p.ndim == 3:
                    p.data = p.data.transpose(1, 2).contiguous().transpose(1, 2)
            p = attn._parameters.get("W_O")  # [head, d_head, d_model] -> d_model (head d_head)
            if p is not None and p.ndim == 3:
                p.data = p.data.permute(2, 0, 1).contiguous().permute(1, 2, 0)
            for name in ("W_in", "W_gate", "W_out"):  # used as F.linear(x, W.T.contiguous())
                p = mlp._parameters.get(name)
                if p is not None and p.ndim == 2:
                    p.data = p.data.T.contiguous().T
    model._sas_fast_layout = True


@torch.inference_mode()
def run_resid(model, tokens, attention_mask, left_pad, cache=None, stop_at_layer=None,
              prompt_end=None) -> torch.Tensor:
    """Run blocks up to ``stop_at_layer`` (default: all) and return the residual [batch, pos, d_model].

    Steering hooks active in the caller see the right positions (padding and cache offset).
    """
    fast_layout(model)
    offset = cache.previous_attention_mask.shape[1] if cache is not None else 0
    with batch_positions(Batch(left_pad, offset, prompt_end)):
        return model(tokens, attention_mask=attention_mask, past_kv_cache=cache,
                     stop_at_layer=model.cfg.n_layers if stop_at_layer is None else stop_at_layer)


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
    choice = torch.multinomial(probs, 1, generator=generator)
    return idx.gather(-1, choice)[:, 0]


@torch.inference_mode()
def generate_tokens(model, prompts: list[list[int]], max_new_tokens: int = 32, do_sample: bool = False,
                    temperature: float = 1.0, top_k: int = 50, top_p: float = 1.0, seed: int | None = None,
                    stop_at_eos: bool = True) -> list[list[int]]:
    """Generate from token-id prompts with a KV cache. Returns the new token ids of each prompt.

    Steering hooks active in the caller apply: ``after_prompt`` steers the last prompt token
    (so the first new token is steered) and every new token.
    """
    tokens, mask, left_pad = pad_left(prompts, pad_id(model))
    n = len(prompts)
    cache = new_cache(model, n)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    eos = model.tokenizer.eos_token_id
    out = torch.zeros((n, 0), dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(max_new_tokens):
        resid = run_resid(model, tokens, mask, left_pad, cache)
        nxt = _sample(logits_at(model, resid[:, -1]), do_sample, temperature, top_k, top_p, gen)
        if stop_at_eos and eos is not None:
            nxt = torch.where(done, torch.full_like(nxt, pad_id(model)), nxt)
            done |= nxt == eos
        out = torch.cat([out, nxt[:, None]], dim=1)
        if done.all():
            break
        tokens, mask = nxt[:, None], torch.ones((n, 1), dtype=torch.long)
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
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    out = []
    for i in range(0, len(prompts), batch_size):
        ids = encode(model, prompts[i:i + batch_size])
        new = generate_tokens(model, ids, max_new_tokens, **kwargs)
        out += model.tokenizer.batch_decode(new, skip_special_tokens=True)
    return out


@torch.inference_mode()
def continuation_nll(model, prompts: list[str], continuations: list[str], batch_size: int = 16) -> torch.Tensor:
    """Summed negative log-likelihood and token count of each continuation given its prompt,
    under the model as it is (steered if called in a steer block). Returns [n, 2] (nll, n_tokens)."""
    rows = []
    for i in range(0, len(prompts), batch_size):
        p_ids = encode(model, prompts[i:i + batch_size])
        c_ids = [model.tokenizer(c, add_special_tokens=False).input_ids for c in continuations[i:i + batch_size]]
        seqs = [p + c for p, c in zip(p_ids, c_ids)]
        tokens, mask, left_pad = pad_left(seqs, pad_id(model))
        resid = run_resid(model, tokens, mask, left_pad)
        n = tokens.shape[1]
        for j, (p, c) in enumerate(zip(p_ids, c_ids)):
            if not c:
                rows.append((0.0, 0))
                continue
            start = n - len(c)  # the continuation's positions; predicted from one position earlier
            logp = torch.log_softmax(logits_at(model, resid[j, start - 1:n - 1]).float(), -1)
            rows.append((-logp.gather(-1, tokens[j, start:, None]).sum().item(), len(c)))
    return torch.tensor(rows, dtype=torch.float64)


def perplexity(model, texts: list[str], batch_size: int = 8, max_tokens: int = 256) -> float:
    """Token-level perplexity of ``texts`` (each cut to ``max_tokens``), under the model as it is."""
    ids = [s[:max_tokens] for s in encode(model, texts, prepend_bos=False)]
    # score every token after the first, conditioned on BOS + the tokens before it
    conts = [model.tokenizer.decode(s[1:]) for s in ids]
    heads = [model.tokenizer.decode(s[:1]) for s in ids]
    nll = continuation_nll(model, heads, conts, batch_size)
    return float(torch.exp(nll[:, 0].sum() / nll[:, 1].sum()))
