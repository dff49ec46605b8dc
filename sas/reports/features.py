"""Feature inspection reports: a Markdown page on the features of a SAS vector and a heat map of feature overlap,
formatted from what :mod:`sas.evaluation.features` computes."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..evaluation import features as _computed
from ..files import write_text
from . import moved

# the inspection functions that compute moved a floor down; their old names here work for one release
__getattr__ = moved(__name__, "sas.evaluation.features",
                    ("NEURONPEDIA", "logit_effects", "top_contexts", "feature_table", "overlap", "neuronpedia_url"))


def plot_overlap(df: pd.DataFrame, path: str | Path) -> Path:
    """A heat map of :func:`overlap`."""
    from .plots import figure, save_figure

    fig, axes = figure(figsize=(1 + 0.8 * len(df), 1 + 0.7 * len(df)))
    ax = axes[0][0]
    im = ax.imshow(df.values, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(df)), df.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(df)), df.index)
    for i in range(len(df)):
        for j in range(len(df)):
            ax.text(j, i, f"{df.values[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax, label="Jaccard overlap of SAS features")
    return save_figure(fig, path)


def report(model, sae, vector, texts: Sequence[str], path: str | Path, layer: int | None = None,
           n_features: int = 10, k_contexts: int = 3, max_tokens: int = 20_000, contrast=None, cache=None) -> Path:
    """Write a Markdown report on the top ``n_features`` features of a SAS vector (with ``contrast``, their firing
    frequency on each side of it). ``cache``: the SAE's :class:`~sas.activations.feature_cache.FeatureCache`, read
    for the contexts and frequencies instead of a pass over ``texts`` (for many vectors of one SAE)."""
    layer = vector.layers[0] if layer is None else layer
    table = _computed.feature_table(model, sae, vector, layer, contrast=contrast).head(n_features)
    if cache is None:
        ctx = _computed.top_contexts(model, sae, table.feature.tolist(), texts, k_contexts, max_tokens=max_tokens)
    else:
        ctx = _computed.cached_contexts(model, cache, table.feature.tolist(), k_contexts)
    lines = [f"# SAS features: {vector.behavior}, layer {layer}", "",
             f"SAE `{vector.sae_names.get(layer, '?')}`, settings `{vector.settings}`", ""]
    for _, r in table.iterrows():
        c = ctx[ctx.feature == r.feature]
        freq = c.frequency.iloc[0] if len(c) else 0.0
        sides = f", on {r.freq_pos:.0%} of the positive and {r.freq_neg:.0%} of the negative rows" \
            if "freq_pos" in table else ""
        lines += [f"## feature {r.feature}  (v = {r.value:+.3f}, output score {r.output_score:.3g}, fires on "
                  f"{freq:.2%} of tokens{sides})", "",
                  f"- promotes: {', '.join(map(repr, r.promoted))}",
                  f"- suppresses: {', '.join(map(repr, r.suppressed))}"]
        if r.neuronpedia:
            lines.append(f"- [Neuronpedia]({r.neuronpedia})")
        lines += [f"- {a:.2f}: `{s.replace(chr(96), chr(39))}`" for a, s in zip(c.activation, c.context)] + [""]
    return write_text(path, "\n".join(lines))
