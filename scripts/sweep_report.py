"""Turn a sweep's JSONL rows into a Markdown report with tables and a plot.

    python scripts/sweep_report.py results/caa_sweep_gemma-3-270m.jsonl --out docs/caa_sweep.md
"""

import argparse
from pathlib import Path

from sas.files import write_text
from sas.reports.plots import plot_sweep
from sas.reports.tables import letter_bias, summary
from sas.runs.store import to_frame


from sas.runs.store import read_rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rows", help="a sweep's JSONL file")
    p.add_argument("--out", required=True, help="the Markdown file to write")
    p.add_argument("--command", default="", help="the command that made the rows, quoted in the report")
    args = p.parse_args()
    df = to_frame(read_rows(args.rows))
    if df.empty:
        raise SystemExit(f"{args.rows} has no rows")
    out = Path(args.out)
    plot = plot_sweep(df, out.with_suffix(".png"))
    ab = "behavior" in df and df["behavior"].notna().any()
    value = "p_match" if ab else "score"
    lines = [f"# {'A/B' if ab else 'Task'} sweep: {', '.join(sorted(df.model.unique()))}", ""]
    if args.command:
        lines += ["Made by:", "", f"```bash\n{args.command}\n```", ""]
    lines += [f"{len(df)} conditions, {df.seconds.sum() / 60:.1f} minutes of compute in total.", ""]
    table = summary(df, value)
    lines += [f"## {value} by layer and multiplier", "", table.to_markdown(), ""]
    if ab:
        shift = df.pivot_table(index=["method", "behavior", "layer"], columns="multiplier", values="p_match")
        zero = shift[0.0] if 0.0 in shift else shift.mean(axis=1)
        best = (shift.max(axis=1) - shift.min(axis=1)).groupby(level=[0, 1]).idxmax()
        rows = []
        for (meth, b), key in best.items():
            r = shift.loc[key]
            rows.append({"method": meth, "behavior": b, "best layer": key[2], "p_match at x0": round(zero[key], 3),
                         "lowest": round(r.min(), 3), "highest": round(r.max(), 3)})
        import pandas as pd

        lines += ["## Largest effect per behaviour", "", pd.DataFrame(rows).to_markdown(index=False), ""]
        lines += ["## Letter bias", "",
                  "The largest shift of the normalised P(A) beside the largest shift of p_match, per layer: "
                  "when the first is as large as the second, the vector steers the answer letter, not the "
                  "behaviour.", "", letter_bias(df).round(4).to_markdown(index=False), ""]
    else:
        lines += ["## perplexity of continuations", "", summary(df, "perplexity").to_markdown(), ""]
        if "score_masked" in df:
            lines += ["## score with the vector's own words masked", "", summary(df, "score_masked").to_markdown(), ""]
    lines += [f"![plot]({plot.name})", ""]
    write_text(out, "\n".join(lines))
    print(out, plot)


if __name__ == "__main__":
    main()
