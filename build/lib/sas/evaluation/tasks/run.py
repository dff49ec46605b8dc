"""Run an open-ended task under steering: generate continuations, score them, measure their fluency."""

from __future__ import annotations

import re
import time
from typing import Sequence

import torch

from ...forward.generate import generate
from ...forward.likelihood import continuation_nll
from ...steering import steer
from ...steering.vector import SteeringVector
from .registry import get_task


def mask_words(vector: SteeringVector | None) -> re.Pattern | None:
    """A regex of the words in an ActAdd vector's prompts (with simple inflections)."""
    if vector is None or vector.method != "actadd":
        return None
    words = {w.lower() for k in ("positive", "negative") for w in re.findall(r"[A-Za-z]+", vector.settings[k])}
    stems = sorted({w[:-1] if w.endswith("e") else w for w in words if len(w) > 2})
    return re.compile(r"\b(" + "|".join(stems) + r")\w*", re.I) if stems else None


def run_task(model, task: str, vector: SteeringVector | None = None, multiplier: float = 0.0,
             layers: Sequence[int] | None = None, n_prompts: int = 40, max_new_tokens: int = 30, seed: int = 0,
             positions: str | None = None, batch_size: int = 40) -> dict:
    """Generate continuations of ``n_prompts`` neutral prompts under steering and score them.

    Returns ``{"score", "score_masked", "perplexity", "n", "seconds", "texts"}``: ``score`` is the
    mean VADER compound (sentiment) or the share of continuations that mention the topic.
    """
    spec = get_task(task)
    t0 = time.time()
    prompts = spec.prompts(n_prompts)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=True, top_k=50, seed=seed, batch_size=batch_size)
    if vector is None or multiplier == 0:
        texts = generate(model, prompts, **kwargs)
    else:
        with steer(model, vector, multiplier, layers, positions):
            texts = generate(model, prompts, **kwargs)
    nll = continuation_nll(model, prompts, texts)
    ppl = float(torch.exp(nll[:, 0].sum() / nll[:, 1].sum().clamp(min=1)))
    mask = mask_words(vector)
    masked = [mask.sub("", t) if mask else t for t in texts]
    score, score_masked = spec.score(texts), spec.score(masked)
    return {"score": sum(score) / len(score), "score_masked": sum(score_masked) / len(score_masked),
            "perplexity": ppl, "n": len(texts), "seconds": time.time() - t0, "texts": texts}
