"""Plots of sweep results (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (folders made as needed) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_sweep(df: pd.DataFrame, path: str | Path, value: str | None = None) -> Path:
    """Two panels per behaviour or task: ``value`` against multiplier (a line per layer) and against
    layer (a line per multiplier). ``value`` defaults to ``p_match`` (A/B) or ``score`` (tasks)."""
    what = "behavior" if "behavior" in df and df["behavior"].notna().any() else "task"
    value = value or ("p_match" if what == "behavior" else "score")
    groups = list(df.groupby(["method", what]))
    fig, axes = plt.subplots(len(groups), 2, figsize=(10, 3.2 * len(groups)), squeeze=False)
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
