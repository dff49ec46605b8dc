"""Residual-stream activations: at the answer letter of A/B pairs, at the last token of texts, at a hook
over token rows. The forward pass stops at the deepest layer read and never builds logits."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from ..checks import int_list
from ..forward.run import encode, new_cache, pad_id, pad_left, read_hooks, run_resid, token_mask
from ..hooks import resid_hook
from ..load.data import ABPair
from ..load.device import block_device
from ..load.prompts import ab_tokens, bos_ids


def token_chunks(model, texts: Iterable[str], context: int = 128, max_tokens: int | None = None) -> torch.Tensor:
    """Concatenate ``texts`` (each followed by EOS) and cut into rows of ``context`` tokens, each starting with BOS
    for a model that reads text after one (:func:`sas.load.prompts.bos_ids`): ``[n, context]``. Position 0 (BOS,
    or the row's first token) is left out of every statistic, as :func:`sas.forward.run.token_mask` does."""
    bos, eos = bos_ids(model), model.tokenizer.eos_token_id
    body = context - len(bos)
    rows, cur, total = [], [], 0
    for text in texts:
        cur += model.tokenizer(text, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
        while len(cur) >= body:
            rows.append(bos + cur[:body])
            cur = cur[body:]
            total += body
        if max_tokens is not None and total >= max_tokens:
            break
    if not rows:
        raise ValueError(f"fewer than {context} tokens of text given; pass more text or a smaller context")
    return torch.tensor(rows, device="cpu")  # token ids on the host: callers send batches to the model


@torch.no_grad()
def hook_activations(model, tokens: torch.Tensor, hook: str, batch_size: int = 16,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Residual activations at ``hook`` for ``tokens [n, pos]``, running the model only up to that layer.

    Returns ``[n_kept, d_model]`` float32: positions where ``mask [n, pos]`` is True (default: all but position 0
    and special tokens, so BOS, whose residual is an outlier, never counts).
    """
    mask = token_mask(model, tokens) if mask is None else mask
    out = []
    for i in range(0, len(tokens), batch_size):
        act = read_hooks(model, tokens[i:i + batch_size], [hook])[hook]
        out.append(act[mask[i:i + batch_size].to(act.device)].float())
    return torch.cat(out)


@torch.no_grad()
def prompt_activations(model, prompts: list[str], hook: str, last_token_only: bool = True,
                       batch_size: int = 16) -> torch.Tensor:
    """Activations at ``hook`` that steering reads: the last token of each prompt (e.g. the answer letter of a
    CAA A/B prompt ending in ``"Answer: (A"``) or, ``last_token_only=False``, every non-BOS token.
    Returns ``[n_rows, d_model]`` float32."""
    rows = []
    for i in range(0, len(prompts), batch_size):
        enc = encode(model, prompts[i:i + batch_size])
        width = max(map(len, enc))
        tokens = torch.zeros(len(enc), width, dtype=torch.long, device=block_device(model))
        mask = torch.zeros(len(enc), width, dtype=torch.bool, device=tokens.device)
        for j, ids in enumerate(enc):  # right padding: causal attention leaves the real tokens unchanged
            tokens[j, :len(ids)] = torch.tensor(ids, device=tokens.device)
            if last_token_only:
                mask[j, len(ids) - 1] = True
            else:
                mask[j, 1:len(ids)] = True
        rows.append(hook_activations(model, tokens, hook, batch_size, mask=mask))
    return torch.cat(rows)


def _check_layers(model, layers: Sequence[int]) -> list[int]:
    layers = sorted(set(int_list(layers, "layers")))
    bad = [x for x in layers if not 0 <= x < model.cfg.n_layers]
    if bad or not layers:
        raise ValueError(f"layer(s) {bad or '[]'} out of range for {model.cfg.model_name}: "
                         f"choose from 0..{model.cfg.n_layers - 1}")
    return layers


@torch.inference_mode()
def answer_activations(model, pairs: list[ABPair], layers: Sequence[int], batch_size: int = 16,
                       progress: bool = True) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Residual activations at the answer-letter token for the matching and the non-matching answer.

    Returns ``(matching, not_matching)``, each ``{layer: [n_pairs, d_model]}``. The question and
    the scaffold run once per pair (KV cache, blocks up to the last layer needed, no logits); the
    two answer letters then run as one token each against the frozen cache.
    """
    layers = _check_layers(model, layers)
    stop = max(layers) + 1
    names = [resid_hook(x) for x in layers]
    t = ab_tokens(model, pairs)
    # batch questions of similar length: a third less padding on the CAA data
    order = sorted(range(len(pairs)), key=lambda k: len(t.prefix[k]))
    dev = block_device(model)
    pos = {x: [] for x in layers}
    neg = {x: [] for x in layers}
    for i in tqdm(range(0, len(pairs), batch_size), desc="CAA activations", disable=not progress):
        idx = order[i:i + batch_size]
        batch = [pairs[k] for k in idx]
        tokens, mask, left_pad = pad_left([t.prefix[k] + t.suffix for k in idx], pad_id(model), dev)
        cache = new_cache(model, len(batch))
        run_resid(model, tokens, mask, left_pad, cache, stop_at_layer=stop)
        cache.freeze()
        acts = {}
        for letter, tid in t.letters.items():  # each answer letter: one token against the frozen cache
            read = read_hooks(model, torch.full((len(batch), 1), tid, device=dev), names,
                              torch.ones((len(batch), 1), dtype=torch.long, device=dev), left_pad, cache)
            acts[letter] = {n: a[:, -1].float() for n, a in read.items()}
        for j, p in enumerate(batch):
            for x, n in zip(layers, names):
                pos[x].append(acts[p.matching][n][j])
                neg[x].append(acts[p.not_matching][n][j])
    back = torch.argsort(torch.tensor(order, device=dev))  # rows in the order of ``pairs``
    return ({x: torch.stack(v)[back.to(v[0].device)] for x, v in pos.items()},
            {x: torch.stack(v)[back.to(v[0].device)] for x, v in neg.items()})


@torch.inference_mode()
def last_token_activations(model, texts: list[str], layers: Sequence[int], batch_size: int = 16,
                           reduce: str = "last") -> dict[int, torch.Tensor]:
    """Residual activations of each text at its last token (``reduce="last"``) or averaged over its
    tokens after BOS (``"mean"``). Returns ``{layer: [n_texts, d_model]}``."""
    layers = _check_layers(model, layers)
    names = {resid_hook(x): x for x in layers}
    out = {x: [] for x in layers}
    for i in range(0, len(texts), batch_size):
        tokens, mask, left_pad = pad_left(encode(model, texts[i:i + batch_size]), pad_id(model), block_device(model))
        store = read_hooks(model, tokens, names, mask, left_pad)
        for n, x in names.items():
            a = store[n].float()
            if reduce == "last":
                out[x].append(a[:, -1])
            else:
                m = mask.clone()
                m[torch.arange(len(m), device=m.device), left_pad] = 0  # drop BOS
                m = m.to(a.device)
                out[x].append((a * m[..., None]).sum(1) / m.sum(1, keepdim=True))
    return {x: torch.cat(v) for x, v in out.items()}
