"""Claim: the tau trade-off. Higher tau keeps only features that fire on many pairs: fewer
features, a cleaner vector, and (past some point) a weaker effect. Sentiment on gemma-3-270m.
Both readings of the SAS mean are run: over all rows (the default) and over the rows where the
feature fires (``active``), with the mean norm of the residual edit, so they compare at equal size.

    python scripts/claim_tau.py --sae gemma-3-270m-L9-4k --multiplier 4 --out docs/claim_tau.md
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import sas  # noqa: E402
from sas.activations.residual import last_token_activations  # noqa: E402
from sas.activations.codes import encode  # noqa: E402
from sas.load.saes import load_sae  # noqa: E402
from sas.methods.sas import sparse_diff  # noqa: E402
from sas.steering.sparse import SparseVector  # noqa: E402
from sas.runs.store import append_row, read_rows  # noqa: E402
from sas.concepts.tasks import sentiment_pairs  # noqa: E402
from sas.evaluation.concept import run_task  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sae", required=True)
    p.add_argument("--taus", default="0,0.05,0.1,0.2,0.4")
    p.add_argument("--means", default="all,active")
    p.add_argument("--multiplier", type=float, default=4.0)
    p.add_argument("--n-prompts", type=int, default=40)
    p.add_argument("--out", default="docs/claim_tau.md")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = sas.load_model()
    sae = load_sae(args.sae, model)
    layer = int(sae.cfg.metadata.hook_name.split(".")[1])
    pt, nt = sentiment_pairs()
    acts = last_token_activations(model, pt + nt, [layer])[layer]
    zp, zn = encode(sae, acts[:len(pt)]), encode(sae, acts[len(pt):])
    out = Path(args.out)
    rows_path = out.with_suffix(".jsonl")
    done = {(r["tau"], r.get("mean", "all")) for r in read_rows(rows_path)}
    for mean, tau in [(m, float(t)) for m in args.means.split(",") for t in args.taus.split(",")]:
        if (tau, mean) in done:
            continue
        try:
            v, info = sparse_diff(zp, zn, tau, mean)
        except ValueError as e:
            append_row(rows_path, {"tau": tau, "mean": mean, "n_features": 0, "note": str(e)})
            continue
        vec = SparseVector({layer: v}, {layer: sae}, "gemma-3-270m", "sentiment")
        edit = vec.hook(layer, 1.0, "all")(acts[None]) - acts[None]
        row = {"tau": tau, "mean": mean, **info, "v_norm": v.norm().item(),
               "resid_change_per_unit": edit.norm(dim=-1).mean().item()}
        for m in (-args.multiplier, args.multiplier):
            r = run_task(model, "sentiment", vec, m, [layer], args.n_prompts)
            row[f"score@{m:+g}"], row[f"ppl@{m:+g}"] = r["score"], r["perplexity"]
        append_row(rows_path, row)
    df = pd.DataFrame(read_rows(rows_path))
    df["mean"] = df.get("mean", pd.Series("all", index=df.index)).fillna("all")
    df = df.sort_values(["mean", "tau"])
    lo, hi = f"score@{-args.multiplier:+g}", f"score@{args.multiplier:+g}"
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for mean, g in df.groupby("mean"):
        ax[0].plot(g.tau, g.n_features, marker="o", label=f"mean over {mean} rows")
        if hi in g:
            ax[1].plot(g.tau, g[hi] - g[lo], marker="o", label=f"mean over {mean} rows")
    ax[0].set(xlabel="tau", ylabel="features in the SAS vector", yscale="log")
    ax[1].set(xlabel="tau", ylabel=f"sentiment span (x{args.multiplier:g} minus x{-args.multiplier:g})")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    lines = ["# The tau trade-off (sentiment)", "", f"SAE `{args.sae}` (layer {layer}), multiplier "
             f"+-{args.multiplier:g}, {args.n_prompts} neutral prompts, VADER compound.", "",
             df.round(4).to_markdown(index=False), "", f"![figure]({out.with_suffix('.png').name})", ""]
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
