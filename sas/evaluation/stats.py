"""Intervals for scores over prompts: percentile bootstrap of a mean (or of a pooled perplexity), and the paired
bootstrap of a difference between two methods scored on the same prompts with the same sampling seeds.

    lo, hi = bootstrap_ci(scores)                       # 95% interval of the mean
    d, lo, hi = paired_diff_ci(scores_sas, scores_caa)  # the difference, per prompt, resampled together
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def _resample_idx(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n < 1:
        raise ValueError("cannot bootstrap an empty list of scores")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    lo, hi = np.quantile(stats, [a, 1 - a])
    return float(lo), float(hi)


def bootstrap_ci(values: Sequence[float], level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling the values with replacement)."""
    v = np.asarray(values, dtype=float)
    return _interval(v[_resample_idx(len(v), n_boot, seed)].mean(1), level)


def perplexity_ci(nll: Sequence[float], n_tokens: Sequence[int], level: float = LEVEL, n_boot: int = N_BOOT,
                  seed: int = 0) -> tuple[float, float, float]:
    """Pooled perplexity ``exp(sum nll / sum tokens)`` over continuations and its bootstrap interval
    (continuations resampled). Returns ``(ppl, lo, hi)``."""
    nll, tok = np.asarray(nll, dtype=float), np.asarray(n_tokens, dtype=float)
    if tok.sum() == 0:
        return math.nan, math.nan, math.nan
    idx = _resample_idx(len(nll), n_boot, seed)
    stats = np.exp(nll[idx].sum(1) / np.maximum(tok[idx].sum(1), 1))
    return float(math.exp(nll.sum() / tok.sum())), *_interval(stats, level)


def paired_diff_ci(a: Sequence[float], b: Sequence[float], level: float = LEVEL, n_boot: int = N_BOOT,
                   seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired items (the same prompts and sampling seeds) and its paired bootstrap
    interval. Returns ``(diff, lo, hi)``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same prompts: got {len(a)} and {len(b)} scores")
    d = a - b
    return float(d.mean()), *bootstrap_ci(d, level, n_boot, seed)


def bootstrap_stat(stat, n: int, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0
                   ) -> tuple[float, float, float]:
    """Any statistic of ``n`` items scored under several conditions on the same prompts and seeds, and its
    percentile bootstrap interval: ``stat(idx)`` computes it on the items ``idx`` (an int array), so every
    condition is resampled together. Returns ``(value, lo, hi)``."""
    boots = np.array([stat(idx) for idx in _resample_idx(n, n_boot, seed)], dtype=float)
    boots = boots[np.isfinite(boots)]  # e.g. a ratio whose denominator a resample made 0
    return float(stat(np.arange(n))), *(_interval(boots, level) if len(boots) else (math.nan, math.nan))


def verdict(lo: float, hi: float, margin: float | None = None) -> str:
    """``"win"`` if an interval of a difference lies above 0, ``"loss"`` below 0; otherwise ``"tie"`` when the
    interval lies within ``[-margin, margin]`` (the smallest difference the test set can detect:
    :func:`detectable_difference`) and ``"underpowered"`` when it reaches beyond (a difference that size could
    be there unseen). Without a margin, every interval that straddles 0 is a ``"tie"``."""
    if lo > 0 or hi < 0:
        return "win" if lo > 0 else "loss"
    if margin is None or (-margin <= lo and hi <= margin):
        return "tie"
    return "underpowered"


def detectable_difference(diffs: Sequence[float], power: float = 0.8, level: float = LEVEL) -> float:
    """The smallest mean paired difference a test of ``len(diffs)`` paired prompts finds at ``level`` with
    probability ``power``: ``(z_(1-a/2) + z_power) * sd(diffs) / sqrt(n)`` (2.80 sd/sqrt(n) at 95% and 80%)."""
    from statistics import NormalDist

    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        raise ValueError("a detectable difference needs at least 2 paired differences")
    z = NormalDist().inv_cdf(1 - (1 - level) / 2) + NormalDist().inv_cdf(power)
    return float(z * d.std(ddof=1) / math.sqrt(len(d)))


def distinct_n(text: str, n: int = 2) -> float:
    """Share of distinct word n-grams among a text's n-grams (1.0 for a text too short to repeat itself)."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0
