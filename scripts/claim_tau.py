"""Claim: the tau trade-off. Higher tau keeps only features that fire on many pairs: fewer
features, a cleaner vector, and (past some point) a weaker effect. Sentiment on gemma-3-270m.
Both readings of the SAS mean are run: over all rows (the default) and over the rows where the
feature fires (``active``).

Every vector steers at the same relative edit size (``--strength``: the mean norm of the residual edit over the
prompts' tokens divided by theirs, the benchmark's scale), each calibrated to its own raw multiplier, so a tau
that keeps fewer features is not weaker merely because its edit is smaller. ``--multiplier`` steers at one raw
multiplier instead (the first version of this claim; edit sizes then differ by tau and by SAE). Scores are VADER
compounds with 95% bootstrap intervals over prompts.

    python scripts/claim_tau.py --sae gemma-3-270m-L9-16k-topk --strength 0.2 --out docs/claim_tau.md
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
from sas.files import write_text  # noqa: E402
from sas.load.saes import load_sae  # noqa: E402
from sas.methods.sas import sparse_diff  # noqa: E402
from sas.steering.sparse import SparseVector  # noqa: E402
from sas.steering.strength import Unreachable, layer_activations, raw_multiplier  # noqa: E402
from sas.runs.store import append_row, read_rows  # noqa: E402
from sas.concepts.tasks import sentiment_pairs  # noqa: E402
from sas.evaluation.concept import run_task  # noqa: E402
from sas.concepts import task_concept, task_prompts  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sae", required=True)
    p.add_argument("--taus", default="0,0.05,0.1,0.2,0.4")
    p.add_argument("--means", default="all,active")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--strength", type=float, default=0.2,
                     help="relative edit size every vector is calibrated to (default 0.2)")
    how.add_argument("--multiplier", type=float, help="one raw multiplier for every vector instead")
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
    scale = f"strength {args.strength:g}" if args.multiplier is None else f"multiplier {args.multiplier:g}"
    if rows_path.exists() and any((r.get("scale", "multiplier 8"), r.get("sae", args.sae)) != (scale, args.sae)
                                  for r in read_rows(rows_path)):
        raise SystemExit(f"{rows_path} holds rows of another SAE or scale than {args.sae} at {scale}: give another "
                         "--out, or move the old file away")
    prompts = task_prompts(task_concept("sentiment"), args.n_prompts)
    done = {(r["tau"], r.get("mean", "all")) for r in read_rows(rows_path)}
    if (None, "unsteered") not in done:  # the baseline: the same prompts and sampling seeds, no edit
        r = run_task(model, "sentiment", None, 0.0, [layer], args.n_prompts)
        append_row(rows_path, {"sae": args.sae, "scale": scale, "tau": None, "mean": "unsteered", "score": r["score"],
                               "score_lo": r["score_lo"], "score_hi": r["score_hi"], "ppl": r["perplexity"]})
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
        row = {"sae": args.sae, "scale": scale, "tau": tau, "mean": mean, **info, "v_norm": v.norm().item(),
               "resid_change_per_unit": edit.norm(dim=-1).mean().item()}
        if args.multiplier is None:
            try:
                mult = raw_multiplier(vec, layer, layer_activations(model, prompts, vec, layer), args.strength)
            except Unreachable as e:
                append_row(rows_path, {**row, "note": str(e)})
                continue
        else:
            mult = args.multiplier
        row["raw_multiplier"] = mult
        for sign, m in (("-", -mult), ("+", mult)):
            r = run_task(model, "sentiment", vec, m, [layer], args.n_prompts)
            row.update({f"score{sign}": r["score"], f"score{sign}_lo": r["score_lo"], f"score{sign}_hi": r["score_hi"],
                        f"ppl{sign}": r["perplexity"]})
        append_row(rows_path, row)
    df = pd.DataFrame(read_rows(rows_path))
    df["mean"] = df.get("mean", pd.Series("all", index=df.index)).fillna("all")
    base = df[df["mean"] == "unsteered"].iloc[0]
    df = df[df["mean"] != "unsteered"]
    df = df.sort_values(["mean", "tau"])
    lo, hi = "score-", "score+"
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for mean, g in df.groupby("mean"):
        ax[0].plot(g.tau, g.n_features, marker="o", label=f"mean over {mean} rows")
        if hi in g:
            ax[1].plot(g.tau, g[hi] - g[lo], marker="o", label=f"mean over {mean} rows")
    ax[0].set(xlabel="tau", ylabel="features in the SAS vector", yscale="log")
    ax[1].set(xlabel="tau", ylabel=f"sentiment span (+ minus -, {scale})")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    for sign in "-+":
        if f"score{sign}" in df:
            df[f"score{sign} [95%]"] = [f"{m:+.3f} [{a:+.3f}, {b:+.3f}]" for m, a, b in
                                        zip(df[f"score{sign}"], df[f"score{sign}_lo"], df[f"score{sign}_hi"])]
    cols = [c for c in ("tau", "mean", "n_features", "n_both", "raw_multiplier", "resid_change_per_unit",
                        "score- [95%]", "ppl-", "score+ [95%]", "ppl+", "note") if c in df]
    lines = ["# The tau trade-off (sentiment)", "", f"SAE `{args.sae}` (layer {layer}), {scale} (negative and "
             f"positive), {args.n_prompts} neutral prompts, VADER compound with 95% bootstrap intervals over "
             "prompts; ppl: the continuations' perplexity under the unsteered model. Unsteered: "
             f"{base['score']:+.3f} [{base['score_lo']:+.3f}, {base['score_hi']:+.3f}], ppl {base['ppl']:.1f}.", "",
             df[cols].round(4).to_markdown(index=False), "", f"![figure]({out.with_suffix('.png').name})", "",
             f"Command: `python scripts/claim_tau.py --sae {args.sae} "
             + (f"--strength {args.strength:g}" if args.multiplier is None else f"--multiplier {args.multiplier:g}")
             + f" --n-prompts {args.n_prompts} --out {args.out}`", ""]
    write_text(out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
