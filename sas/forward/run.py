"""Fast forward passes and generation on a HookedTransformer, with padding and a KV cache.

Only the logits that are needed are computed: with a 262k vocabulary the unembedding dominates
the cost of a small model (STACK.md), so activations never build logits and generation builds
them for the last position only.
"""

from __future__ import annotations

import torch

from ..hooks import layer_of
from ..load.device import block_device
from ..load.prompts import bos_ids
from .positions import Batch, batch_positions


def pad_left(seqs: list[list[int]], pad_id: int, device: torch.device | str | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad token lists on ``device`` (the model's: ``block_device(model)``). Returns ``tokens`` [batch, pos],
    ``attention_mask`` [batch, pos], ``left_pad`` [batch]."""
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError("cannot run an empty prompt or an empty batch")
    n = max(len(s) for s in seqs)
    # built as lists and copied once: one host-to-device transfer per tensor on a GPU
    tokens = torch.tensor([[pad_id] * (n - len(s)) + list(s) for s in seqs], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (n - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long, device=device)
    return tokens, mask, n - mask.sum(1)


def encode(model, texts: list[str], prepend_bos: bool = True) -> list[list[int]]:
    """Token ids of each text (BOS first, per :func:`bos_ids`, unless ``prepend_bos=False``)."""
    bos = bos_ids(model) if prepend_bos else []
    return [bos + model.tokenizer(t, add_special_tokens=False).input_ids for t in texts]


def token_mask(model, tokens: torch.Tensor) -> torch.Tensor:
    """``[batch, pos]`` bool: the positions whose activations count (not the first position, whose residual is an
    outlier, and no special token: BOS, EOS, padding)."""
    specials = torch.tensor(sorted(set(model.tokenizer.all_special_ids)), device=tokens.device)
    keep = ~torch.isin(tokens, specials)
    keep[:, 0] = False
    return keep


@torch.no_grad()
def read_hooks(model, tokens: torch.Tensor, hooks, attention_mask: torch.Tensor | None = None,
               left_pad: torch.Tensor | None = None, cache=None) -> dict[str, torch.Tensor]:
    """Activations ``{hook: [batch, pos, d]}`` of ``tokens [batch, pos]`` at each of ``hooks`` (names such as
    ``blocks.9.hook_resid_post``), from one forward pass that stops after the deepest hook's block (no logits).

    Unpadded rows by default (gradient-free but not inference tensors: an SAE may be trained on them); left-padded
    rows with ``attention_mask`` and ``left_pad`` from :func:`pad_left` (steering hooks active in the caller then
    see the right positions), continuing a KV ``cache`` (:func:`new_cache`) if one is given."""
    hooks = set(hooks)
    stop = max(layer_of(h) if h.startswith("blocks.") else 0 for h in hooks) + 1
    if attention_mask is None:
        fast_layout(model)
        _, cache = model.run_with_cache(tokens.to(block_device(model)), stop_at_layer=stop,
                                        names_filter=lambda n: n in hooks)
        return {h: cache[h] for h in hooks}
    store = {}
    with model.hooks(fwd_hooks=[(h, lambda x, hook: store.__setitem__(hook.name, x)) for h in hooks]):
        run_resid(model, tokens, attention_mask, left_pad, cache, stop_at_layer=stop)
    return store


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
        logits = torch.cat([c for _, c in _unembed_chunks(model, x)], -1)
    else:
        logits = x @ model.W_U  # TL 3.9's Unembed copies W_U.T on every call
    return _bias_and_cap(model, logits)


VOCAB_CHUNK = 4096  # vocabulary rows per unembedding chunk


def _unembed_chunks(model, x: torch.Tensor, size: int = VOCAB_CHUNK):
    """``(first token id, x @ W_U[:, chunk])`` over the vocabulary in chunks of ``size`` (no bias, no softcap)."""
    w = _vocab_major_W_U(model)
    for i in range(0, w.shape[0], size):
        yield i, torch.nn.functional.linear(x, w[i:i + size])


def _bias_and_cap(model, logits: torch.Tensor, first: int = 0) -> torch.Tensor:
    """The unembedding's bias (zero for most models: the add is skipped) and the logit softcap, on logits of the
    vocabulary slice that starts at token id ``first``."""
    if model.b_U.any():
        logits = logits + model.b_U[first:first + logits.shape[-1]]
    cap = model.cfg.output_logits_soft_cap
    return cap * torch.tanh(logits / cap) if cap and cap > 0 else logits


def target_logprobs(model, resid: torch.Tensor, targets: torch.Tensor, chunk: int = VOCAB_CHUNK) -> torch.Tensor:
    """``log p(targets[i])`` under the next-token distribution at final-block residual ``resid[i]`` ([rows,
    d_model], [rows]), float32, without building the [rows, d_vocab] logits: the vocabulary streams through in
    chunks and the log-sum-exp accumulates. The same values as ``log_softmax(logits_at(...))`` gathered at the
    targets, up to float rounding, and about 1.5x faster for the thousands of positions of a perplexity pass
    (one read of W_U for all of them, no logits tensor of gigabytes)."""
    x = model.ln_final(resid)
    lse = torch.full(targets.shape, -torch.inf, device=x.device)
    picked = torch.zeros(targets.shape, device=x.device)
    for first, raw in _unembed_chunks(model, x, chunk):
        logits = _bias_and_cap(model, raw, first).float()
        lse = torch.logaddexp(lse, logits.logsumexp(-1))
        hit = (targets >= first) & (targets < first + logits.shape[-1])
        picked[hit] = logits[hit, targets[hit] - first]
    return picked - lse


def new_cache(model, n_batch: int):
    """An empty TransformerLens KV cache for ``n_batch`` rows, on the model's device."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    return TransformerLensKeyValueCache.init_cache(model.cfg, block_device(model), n_batch)


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


def check_context(model, n_tokens: int, what: str = "the sequence") -> None:
    """``ValueError`` if ``n_tokens`` exceed the model's context ``cfg.n_ctx``: TransformerLens builds its
    positional (rotary) tables for that many positions, and a longer pass fails deep inside with an IndexError."""
    if n_tokens > model.cfg.n_ctx:
        raise ValueError(f"{what} is {n_tokens} tokens, more than the {model.cfg.n_ctx}-token context of "
                         f"{model.cfg.model_name} (TransformerLens's cfg.n_ctx, the length its position tables "
                         "cover); shorten the prompt or ask for fewer new tokens")


@torch.inference_mode()
def run_resid(model, tokens, attention_mask, left_pad, cache=None, stop_at_layer=None,
              prompt_end=None) -> torch.Tensor:
    """Run blocks up to ``stop_at_layer`` (default: all) and return the residual [batch, pos, d_model].

    Steering hooks active in the caller see the right positions (padding and cache offset).
    """
    fast_layout(model)
    dev = block_device(model)  # no-ops when the caller built them there, as sas does
    tokens, attention_mask, left_pad = tokens.to(dev), attention_mask.to(dev), left_pad.to(dev)
    offset = cache.previous_attention_mask.shape[1] if cache is not None else 0
    check_context(model, offset + tokens.shape[1])
    with batch_positions(Batch(left_pad, offset, prompt_end)):
        return model(tokens, attention_mask=attention_mask, past_kv_cache=cache,
                     stop_at_layer=model.cfg.n_layers if stop_at_layer is None else stop_at_layer)


