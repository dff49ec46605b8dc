"""Side effects of steering: MMLU and TruthfulQA A/B scores and held-out perplexity."""

from __future__ import annotations

from ..forward.likelihood import perplexity
from ..load.data import load_mmlu, load_text_sample, load_truthfulqa
from ..steering import steer
from .ab import ABScorer


def side_effects(model, vectors=None, multipliers=1.0, layers=None, positions=None, n_mmlu: int = 100,
                 n_truthfulqa: int = 100, n_texts: int = 20, scorers: dict | None = None) -> dict:
    """MMLU and TruthfulQA accuracy-like scores (``p_match`` of the correct letter) and held-out
    perplexity under steering. ``scorers`` may carry prebuilt :class:`ABScorer` objects to reuse."""
    scorers = scorers if scorers is not None else {}
    if "mmlu" not in scorers:
        mmlu, tqa = load_mmlu(), load_truthfulqa()  # every k-th item: a spread over subjects, not the first ones
        scorers["mmlu"] = ABScorer(model, mmlu[::max(1, len(mmlu) // n_mmlu)][:n_mmlu])
        scorers["truthfulqa"] = ABScorer(model, tqa[::max(1, len(tqa) // n_truthfulqa)][:n_truthfulqa])
    out = {k: s.score(vectors, multipliers, layers, positions)["p_match"] for k, s in scorers.items()}
    texts = load_text_sample(n_texts)
    if vectors is None:
        out["perplexity"] = perplexity(model, texts)
    else:
        with steer(model, vectors, multipliers, layers, "all" if positions is None else positions):
            out["perplexity"] = perplexity(model, texts)
    return out
