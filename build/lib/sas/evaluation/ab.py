"""Evaluation: the CAA A/B behaviour score, side effects (MMLU, TruthfulQA, perplexity)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import torch

from ..forward.run import logits_at, new_cache, pad_id, pad_left, run_resid
from ..load.data import ABPair
from ..load.device import block_device
from ..load.prompts import ab_tokens
from ..steering.steer import _as_terms, steer


@dataclass
class _Chunk:
    pairs: list[ABPair]
    prefix: torch.Tensor  # [b, pos] left-padded question tokens
    mask: torch.Tensor
    left_pad: torch.Tensor
    cache: object = None  # frozen KV cache of the unsteered prefix


class ABScorer:
    """Scores A/B questions as CAA does: P(matching letter) at the answer position.

    The unsteered question prefix runs once and its KV cache is reused for every steering
    condition that leaves the prefix alone (``after_prompt``, as in CAA): each condition then runs
    only the answer scaffold (``"\\n\\nAnswer: ("``, 4 tokens), and only the two letter logits and
    the normaliser are computed at the last position.
    """

    def __init__(self, model, pairs: list[ABPair], batch_size: int = 25):
        if not pairs:
            raise ValueError("the data set is empty: nothing to score")
        self.model, self.t = model, ab_tokens(model, pairs)
        self.chunks = []
        for i in range(0, len(pairs), batch_size):
            tokens, mask, left_pad = pad_left(self.t.prefix[i:i + batch_size], pad_id(model), block_device(model))
            self.chunks.append(_Chunk(pairs[i:i + batch_size], tokens, mask, left_pad))

    def _prefix_cache(self, c: _Chunk):
        if c.cache is None:
            c.cache = new_cache(self.model, len(c.pairs))
            run_resid(self.model, c.prefix, c.mask, c.left_pad, c.cache)
            c.cache.freeze()
        return c.cache

    @torch.inference_mode()
    def score(self, vectors=None, multipliers=1.0, layers: Sequence[int] | None = None,
              positions: str | None = None) -> dict:
        """Mean ``p_match`` (normalised over the two letters), ``p_match_raw`` (over the vocabulary),
        and ``p_a`` (normalised P(A), for the letter bias) under the given steering, with ``n``."""
        m, suffix = self.model, self.t.suffix
        dev = block_device(m)
        ids = torch.tensor(list(self.t.letters.values()), device=dev)
        col = {letter: i for i, letter in enumerate(self.t.letters)}
        terms = [] if vectors is None else vectors
        mults = [multipliers] if isinstance(multipliers, (int, float)) else list(multipliers)
        live = _as_terms(terms, mults) if terms else []
        shared = all((positions or v.positions) == "after_prompt" or x == 0 for v, x in live)
        rows = []
        if shared:  # the prefix cache must be built unsteered, before the steering hooks go on
            for c in self.chunks:
                self._prefix_cache(c)
        ctx = steer(m, [v for v, _ in live], [x for _, x in live], layers, positions) if live else nullcontext()
        with ctx:
            for c in self.chunks:
                b = len(c.pairs)
                prompt_end = c.mask.sum(1)  # real prefix length: the scaffold is after the prompt
                if shared:
                    cache = self._prefix_cache(c)
                    resid = run_resid(m, torch.tensor([suffix] * b, device=dev),
                                      torch.ones((b, len(suffix)), dtype=torch.long, device=dev),
                                      c.left_pad, cache, prompt_end=prompt_end)
                else:
                    tokens = torch.cat([c.prefix, torch.tensor([suffix] * b, device=dev)], 1)
                    mask = torch.cat([c.mask, torch.ones((b, len(suffix)), dtype=torch.long, device=dev)], 1)
                    resid = run_resid(m, tokens, mask, c.left_pad, prompt_end=prompt_end)
                logits = logits_at(m, resid[:, -1])
                logp = torch.log_softmax(logits.float(), -1)[:, ids.to(logits.device)]
                for j, p in enumerate(c.pairs):
                    lm, ln = logp[j, col[p.matching]], logp[j, col[p.not_matching]]
                    # the letter bias is P(A) against P(B): only defined for pairs answered with A and B
                    ab = {p.matching, p.not_matching} == {"A", "B"}
                    pa = torch.sigmoid(logp[j, col["A"]] - logp[j, col["B"]]).item() if ab else float("nan")
                    rows.append((torch.sigmoid(lm - ln).item(), lm.exp().item(), pa))
        r = torch.tensor(rows, device="cpu")  # host-side results
        pa = r[:, 2][~r[:, 2].isnan()]
        return {"p_match": r[:, 0].mean().item(), "p_match_raw": r[:, 1].mean().item(),
                "p_a": pa.mean().item() if len(pa) else None, "n": len(rows), "n_ab": len(pa)}


def ab_score(model, pairs: list[ABPair], vectors=None, multipliers=1.0, layers=None, positions=None) -> dict:
    """One-off A/B score (see :class:`ABScorer` to score many conditions on the same questions)."""
    return ABScorer(model, pairs).score(vectors, multipliers, layers, positions)


