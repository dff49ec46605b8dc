"""Plots of results (matplotlib's object API: no backend is chosen and no global figure state is touched,
so importing this in a notebook or a server changes nothing)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..files import write_atomic


def figure(nrows: int = 1, ncols: int = 1, **kw):
    """``(fig, axes)`` like ``plt.subplots(..., squeeze=False)``, without pyplot."""
    fig = Figure(figsize=kw.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (folders made as needed; atomically, in the format its suffix names)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or None))


def plot_sweep(df: pd.DataFrame, path: str | Path, value: str | None = None) -> Path:
    """Two panels per behaviour or task: ``value`` against multiplier (a line per layer) and against
    layer (a line per multiplier). ``value`` defaults to ``p_match`` (A/B) or ``score`` (tasks)."""
    what = "behavior" if "behavior" in df and df["behavior"].notna().any() else "task"
    value = value or ("p_match" if what == "behavior" else "score")
    groups = list(df.groupby(["method", what]))
    fig, axes = figure(len(groups), 2, figsize=(10, 3.2 * len(groups)))
    for (key, g), (a, b) in zip(groups, axes):
        for layer, gl in g.groupby("layer"):
            gl = gl.sort_values("multiplier")
            a.plot(gl.multiplier, gl[value], marker="o", label=f"layer {layer}")
        for mult, gm in g.groupby("multiplier"):
            gm = gm.sort_values("layer")
            b.plot(gm.layer, gm[value], marker="o", label=f"x{mult:g}")
        a.set(title=f"{key[0]} / {key[1]}", xlabel="multiplier", ylabel=value)
        b.set(title=f"{key[0]} / {key[1]}", xlabel="layer", ylabel=value)
        a.legend(fontsize=7)
        b.legend(fontsize=7)
    return save_figure(fig, path)


def plot_compare(df: pd.DataFrame, path: str | Path) -> Path:
    """Score against multiplier per method (a panel per layer and behaviour/task), and, with side
    effects, each side effect against the behaviour shift."""
    what = "task" if "task" in df and df["task"].notna().any() else "behavior"
    value = "score" if what == "task" else "p_match"
    groups = list(df.groupby([what, "layer"]))
    se = [c for c in ("mmlu", "truthfulqa", "perplexity") if c in df]
    ncol = max(2, 1 + len(se))
    fig, axes = figure(len(groups) + 1, ncol, figsize=(4.5 * ncol, 3.2 * (len(groups) + 1)))
    for ((item, layer), g), ax in zip(groups, axes):
        for meth, gm in g.groupby("method"):
            gm = gm.sort_values("multiplier")
            ax[0].plot(gm.multiplier, gm[value], marker="o", label=meth)
            zero = gm[gm.multiplier == 0][value]
            shift = gm[value] - (zero.iloc[0] if len(zero) else gm[value].mean())
            order = shift.argsort().to_numpy()
            for a, c in zip(ax[1:], se):
                a.plot(shift.iloc[order], gm[c].iloc[order], marker="o", label=meth)
                a.set(xlabel=f"{value} shift", ylabel=c, title=f"{item} L{layer}: {c} at matched shift")
        ax[0].set(xlabel="multiplier", ylabel=value, title=f"{item}, layer {layer}")
        ax[0].legend(fontsize=7)
        for a in ax[1 + len(se):]:
            a.axis("off")
    # last row: how the SAS vector relates to CAA per layer (direction, and how many features it keeps)
    per_layer = df[df.method == "sas"].groupby([what, "layer"])[["cos_caa", "n_features"]].first().reset_index()
    for item, g in per_layer.groupby(what):
        axes[-1][0].plot(g.layer, g.cos_caa, marker="o", label=item)
        axes[-1][1].plot(g.layer, g.n_features, marker="o", label=item)
    axes[-1][0].set(xlabel="layer", ylabel="cosine", title="SAS direction (W_dec^T v) vs CAA vector")
    axes[-1][1].set(xlabel="layer", ylabel="features", title="features in the SAS vector")
    for a in axes[-1][:2]:
        a.legend(fontsize=6)
    for a in axes[-1][2:]:
        a.axis("off")
    return save_figure(fig, path)
