"""Two claims from dense sweeps: CAA works best at early-middle layers, and negative steering is
stronger than positive. Reads sweep rows (A/B or task), writes a figure and a Markdown section.

    sas sweep --task sentiment --method caa --out results/sentiment_caa.jsonl
    python scripts/claim_layers_and_sign.py results/sentiment_caa.jsonl results/caa_sweep_gemma-3-270m.jsonl \
        --out docs/claims_layers_sign.md
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sas.runs.store import to_frame  # noqa: E402
from sas.runs.store import read_rows  # noqa: E402
from sas.files import write_text  # noqa: E402


def effects(df: pd.DataFrame) -> pd.DataFrame:
    """Per (method, behaviour/task, layer, |m|): the shift from x0 at -m and at +m, signed so that
    a positive number means the intended direction."""
    what = "task" if "task" in df and df["task"].notna().any() else "behavior"
    value = "score" if what == "task" else "p_match"
    out = []
    for (meth, item, layer), g in df.groupby(["method", what, "layer"]):
        g = g.set_index("multiplier")[value]
        if 0.0 not in g:
            continue
        for m in sorted(x for x in g.index if x > 0):
            if -m in g:
                out.append({"method": meth, "item": item, "layer": layer, "m": m,
                            "positive": g[m] - g[0.0], "negative": g[0.0] - g[-m]})
    return pd.DataFrame(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rows", nargs="+", help="sweep JSONL files")
    p.add_argument("--out", default="docs/claims_layers_sign.md")
    args = p.parse_args()
    eff = pd.concat([effects(to_frame(read_rows(r))) for r in args.rows], ignore_index=True)
    if eff.empty:
        raise SystemExit("no rows with multipliers -m, 0 and +m")
    top = eff[eff.m == eff.groupby(["method", "item"]).m.transform("max")]
    top = top.assign(span=top.positive + top.negative)
    by_layer = top.pivot_table(index="layer", columns=["method", "item"], values="span")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for col in by_layer:
        ax[0].plot(by_layer.index, by_layer[col], marker="o", label=" / ".join(map(str, col)))
    ax[0].set(xlabel="layer", ylabel="score(+m) - score(-m)", title="steering effect by layer (largest m)")
    ax[0].legend(fontsize=6)
    ax[1].scatter(top.positive, top.negative, s=12)
    lim = max(top.positive.abs().max(), top.negative.abs().max()) * 1.1
    ax[1].plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
    ax[1].set(xlabel="shift with +m", ylabel="shift with -m (sign flipped)", title="negative vs positive steering")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    best = top.loc[top.groupby(["method", "item"]).span.idxmax(), ["method", "item", "layer", "m", "span"]]
    neg_wins = (top.negative > top.positive).mean()
    lines = ["# Best layers and the sign of steering", "",
             f"Rows: {', '.join(args.rows)}. Effects at the largest multiplier m of each sweep.", "",
             "## Best layer per behaviour or task", "", best.round(4).to_markdown(index=False), "",
             "## Negative vs positive", "",
             f"Negative steering moves the score further than positive in {neg_wins:.0%} of "
             f"(method, item, layer) cases; median shift with -m {top.negative.median():+.4f}, with +m "
             f"{top.positive.median():+.4f}.", "",
             top.groupby(["method", "item"])[["positive", "negative"]].median().round(4).to_markdown(), "",
             f"![figure]({out.with_suffix('.png').name})", ""]
    write_text(out, "\n".join(lines))
    print(out)


if __name__ == "__main__":
    main()
