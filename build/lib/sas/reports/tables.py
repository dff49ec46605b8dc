"""Results as tables: rows as a DataFrame, readable pivots, the A/B letter bias."""

from __future__ import annotations

import pandas as pd


def letter_bias(df: pd.DataFrame) -> pd.DataFrame:
    """How far steering moves P(A) regardless of behaviour: per method, behaviour and layer, the
    largest |p_a(multiplier) - p_a(0)|, beside the largest |p_match(multiplier) - p_match(0)|."""
    out = []
    for (meth, b, layer), g in df.groupby(["method", "behavior", "layer"]):
        zero = g[g.multiplier == 0]
        if zero.empty:
            continue
        z = zero.iloc[0]
        out.append({"method": meth, "behavior": b, "layer": layer,
                    "max_shift_p_match": (g.p_match - z.p_match).abs().max(),
                    "max_shift_p_a": (g.p_a - z.p_a).abs().max()})
    return pd.DataFrame(out)


def summary(df: pd.DataFrame, value: str = "p_match") -> pd.DataFrame:
    """A readable pivot: rows (method, behaviour/task, layer), columns multiplier."""
    what = "behavior" if "behavior" in df else "task"
    return df.pivot_table(index=["method", what, "layer"], columns="multiplier", values=value).round(3)
