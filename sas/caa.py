"""Contrastive Activation Addition (Rimsky et al. 2024): the mean difference of residual
activations at the answer letter, between the behaviour-matching and the non-matching answer."""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from .datasets import ABPair, balance_letters, data_hash
from .generation import encode, new_cache, pad_id, pad_left, run_resid
from .prompts import ab_tokens
from .vector import SteeringVector


def _check_layers(model, layers: Sequence[int]) -> list[int]:
    layers = sorted(set(int(x) for x in layers))
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
    names = [f"blocks.{x}.hook_resid_post" for x in layers]
    t = ab_tokens(model, pairs)
    # batch questions of similar length: a third less padding on the CAA data
    order = sorted(range(len(pairs)), key=lambda k: len(t.prefix[k]))
    pos = {x: [] for x in layers}
    neg = {x: [] for x in layers}
    for i in tqdm(range(0, len(pairs), batch_size), desc="CAA activations", disable=not progress):
        idx = order[i:i + batch_size]
        batch = [pairs[k] for k in idx]
        tokens, mask, left_pad = pad_left([t.prefix[k] + t.suffix for k in idx], pad_id(model))
        cache = new_cache(model, len(batch))
        run_resid(model, tokens, mask, left_pad, cache, stop_at_layer=stop)
        cache.freeze()
        acts = {}
        for letter, tid in t.letters.items():
            store = {}
            hooks = [(n, lambda x, hook, s=store: s.__setitem__(hook.name, x[:, -1].float().clone())) for n in names]
            with model.hooks(fwd_hooks=hooks):
                run_resid(model, torch.full((len(batch), 1), tid), torch.ones((len(batch), 1), dtype=torch.long),
                          left_pad, cache, stop_at_layer=stop)
            acts[letter] = store
        for j, p in enumerate(batch):
            for x, n in zip(layers, names):
                pos[x].append(acts[p.matching][n][j])
                neg[x].append(acts[p.not_matching][n][j])
    back = torch.argsort(torch.tensor(order))  # rows in the order of ``pairs``
    return ({x: torch.stack(v)[back] for x, v in pos.items()}, {x: torch.stack(v)[back] for x, v in neg.items()})


def caa_vector(model, pairs: list[ABPair], layers: Sequence[int], behavior: str = "custom",
               balance: bool = True, seed: int = 0, batch_size: int = 16, progress: bool = True) -> SteeringVector:
    """A CAA vector for ``layers`` from A/B ``pairs`` (letter-balanced by default).

    Returns a :class:`SteeringVector` whose ``directions[layer]`` is ``[d_model]``, added at
    ``after_prompt`` positions by default, as in CAA.
    """
    if not pairs:
        raise ValueError("the data set is empty: a CAA vector needs at least one pair")
    used = balance_letters(pairs, seed) if balance else pairs
    pos, neg = answer_activations(model, used, layers, batch_size, progress)
    dirs = {x: (pos[x].mean(0) - neg[x].mean(0)) for x in pos}
    n_a = sum(p.matching == "A" for p in used)
    return SteeringVector(dirs, model.cfg.model_name, "caa", behavior, positions="after_prompt",
                          data_hash=data_hash(used),
                          settings={"n_pairs": len(used), "n_matching_A": n_a, "balanced": balance, "seed": seed,
                                    "token": "answer letter"})


@torch.inference_mode()
def last_token_activations(model, texts: list[str], layers: Sequence[int], batch_size: int = 16,
                           reduce: str = "last") -> dict[int, torch.Tensor]:
    """Residual activations of each text at its last token (``reduce="last"``) or averaged over its
    tokens after BOS (``"mean"``). Returns ``{layer: [n_texts, d_model]}``."""
    layers = _check_layers(model, layers)
    names = {f"blocks.{x}.hook_resid_post": x for x in layers}
    out = {x: [] for x in layers}
    for i in range(0, len(texts), batch_size):
        tokens, mask, left_pad = pad_left(encode(model, texts[i:i + batch_size]), pad_id(model))
        store = {}
        hooks = [(n, lambda x, hook, s=store: s.__setitem__(hook.name, x.float())) for n in names]
        with model.hooks(fwd_hooks=hooks):
            run_resid(model, tokens, mask, left_pad, stop_at_layer=max(layers) + 1)
        for n, x in names.items():
            a = store[n]
            if reduce == "last":
                out[x].append(a[:, -1])
            else:
                m = mask.clone()
                m[torch.arange(len(m)), left_pad] = 0  # drop BOS
                out[x].append((a * m[..., None]).sum(1) / m.sum(1, keepdim=True))
    return {x: torch.cat(v) for x, v in out.items()}


def contrastive_vector(model, positive: list[str], negative: list[str], layers: Sequence[int],
                       behavior: str = "custom", reduce: str = "last", positions: str = "all") -> SteeringVector:
    """CAA from free-text contrastive pairs (e.g. "The movie was wonderful" / "... awful"):
    mean activation difference at the last token (or averaged over tokens)."""
    if len(positive) != len(negative) or not positive:
        raise ValueError(f"need as many positive as negative texts, and at least one; got {len(positive)} "
                         f"and {len(negative)}")
    same = [p for p, n in zip(positive, negative) if p == n]
    if same:
        raise ValueError(f"{len(same)} pair(s) have the same text on both sides, e.g. {same[0]!r}")
    pa = last_token_activations(model, positive, layers, reduce=reduce)
    na = last_token_activations(model, negative, layers, reduce=reduce)
    dirs = {x: pa[x].mean(0) - na[x].mean(0) for x in pa}
    return SteeringVector(dirs, model.cfg.model_name, "caa", behavior, positions=positions,
                          data_hash=data_hash(list(zip(positive, negative))),
                          settings={"n_pairs": len(positive), "reduce": reduce})
