"""Claim: a wider SAE gives sparser, more monosemantic SAS vectors.

For each behaviour (answer-letter activations of letter-balanced generate pairs), for sentiment
(contrastive sentences) and for every shipped benchmark concept (its contrastive texts), build the SAS vector in
each SAE (same layer, different widths) and report the number of features, how concentrated |v| is in its top 10
features, and how much the feature sets of different items overlap (less overlap: features specific to one
item). With two SAEs, the paired difference in features per item (wider minus narrower) gets a 95% bootstrap
interval over items. Compare SAEs trained on the same tokens, or the comparison is of training, not width.

    python scripts/claim_width.py --saes gemma-3-270m-L9-4k-topk,gemma-3-270m-L9-16k-topk --out docs/claim_width.md
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import sas  # noqa: E402
from sas.activations.residual import answer_activations, last_token_activations  # noqa: E402
from sas.load.data import BEHAVIORS, balance_letters, load_behavior  # noqa: E402
from sas.evaluation.features import overlap  # noqa: E402
from sas.activations.codes import encode  # noqa: E402
from sas.files import write_text  # noqa: E402
from sas.load.saes import load_sae  # noqa: E402
from sas.methods.sas import sparse_diff  # noqa: E402
from sas.steering.sparse import SparseVector  # noqa: E402
from sas.concepts.tasks import sentiment_pairs  # noqa: E402
from sas.concepts.schema import shipped_concepts  # noqa: E402
from sas.evaluation.stats import paired_diff_ci  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--saes", required=True, help="comma-separated SAE names at one layer, different widths")
    p.add_argument("--tau", type=float, default=0.1)
    p.add_argument("--n-pairs", type=int, default=200, help="pairs per behaviour")
    p.add_argument("--out", default="docs/claim_width.md")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--acts-cache", default="results/claim_width_acts_L{layer}_{n}.pt",
                   help="where the activations are kept, so that another set of SAEs reuses them")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = sas.load_model()
    saes = {n: load_sae(n, model) for n in args.saes.split(",")}
    layers = {int(s.cfg.metadata.hook_name.split(".")[1]) for s in saes.values()}
    if len(layers) != 1:
        raise SystemExit(f"the SAEs read different layers {sorted(layers)}; give SAEs of one layer")
    layer = layers.pop()
    out = Path(args.out)
    cache = Path(args.acts_cache.format(layer=layer, n=args.n_pairs))  # activations do not depend on the SAEs
    acts = torch.load(cache, weights_only=True) if cache.exists() else {}
    n_cached = len(acts)
    for b in BEHAVIORS:
        if b not in acts:
            pos, neg = answer_activations(model, balance_letters(load_behavior(b))[:args.n_pairs], [layer])
            acts[b] = (pos[layer], neg[layer])
    texts = {"sentiment": sentiment_pairs()}
    for name, c in shipped_concepts().items():  # a concept that repeats another's texts (or swaps them) is not a new item
        pair = (c.positive_texts(), c.negative_texts())
        sides = {frozenset(pair[0]), frozenset(pair[1])}
        if not any(sides == {frozenset(q[0]), frozenset(q[1])} for q in texts.values()):
            texts[name] = pair
    for name, (pt, nt) in texts.items():
        if name not in acts:
            acts[name] = (last_token_activations(model, pt, [layer])[layer],
                          last_token_activations(model, nt, [layer])[layer])
    if len(acts) != n_cached:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(acts, cache)
    rows, vecs = [], {}
    for name, sae in saes.items():
        vecs[name] = {}
        for item, (pos, neg) in acts.items():
            try:
                v, info = sparse_diff(encode(sae, pos), encode(sae, neg), args.tau)
            except ValueError as e:
                rows.append({"sae": name, "width": sae.cfg.d_sae, "item": item, "n_features": 0, "note": str(e)})
                continue
            a = v.abs().sort(descending=True).values
            vecs[name][item] = SparseVector({layer: v}, {layer: sae}, "gemma-3-270m", item)
            rows.append({"sae": name, "width": sae.cfg.d_sae, "item": item, "n_features": info["n_features"],
                         "top10_mass": (a[:10].sum() / a.sum()).item(), "n_both_dropped": info["n_both"]})
    df = pd.DataFrame(rows)
    over = {}
    for name, vs in vecs.items():
        m = overlap(vs).values
        over[name] = m[~np.eye(len(m), dtype=bool)].mean() if len(m) > 1 else float("nan")
    piv = df.pivot_table(index="item", columns="width", values="n_features")
    ax = piv.plot.bar(figsize=(9, 4), title=f"SAS features per vector at layer {layer}, tau={args.tau}")
    ax.set_ylabel("features in the SAS vector")
    plt.tight_layout()
    plt.savefig(out.with_suffix(".png"), dpi=100)
    summary = df.groupby("width")[["n_features", "top10_mass"]].median().round(3)
    summary["mean_overlap_across_items"] = [round(over[n], 3) for n in saes]
    paired = []
    if len(saes) == 2:
        (n_a, a), (n_b, b) = sorted(saes.items(), key=lambda kv: kv[1].cfg.d_sae)
        both = piv.dropna()
        wide, narrow = both[b.cfg.d_sae].tolist(), both[a.cfg.d_sae].tolist()
        d, lo, hi = paired_diff_ci(wide, narrow)
        fewer = sum(w < x for w, x in zip(wide, narrow))
        more = sum(w > x for w, x in zip(wide, narrow))
        paired = ["## Paired over items", "",
                  f"Features per vector, {n_b} minus {n_a}, mean over {len(both)} items: **{d:+.2f} [{lo:+.2f}, "
                  f"{hi:+.2f}]** (95% bootstrap interval over items). The wider SAE gives fewer features on {fewer} "
                  f"items, more on {more}, as many on {len(both) - fewer - more}.", ""]
    lines = ["# Wider SAEs and the sparsity of SAS vectors", "",
             f"Layer {layer}, tau {args.tau}, {args.n_pairs} letter-balanced pairs per behaviour, 100 sentiment "
             f"sentence pairs, each shipped concept's contrastive texts. SAEs: {args.saes}.", "",
             "## Median over items", "", summary.to_markdown(), "", *paired,
             "## Per item", "", piv.to_markdown(), "", f"![figure]({out.with_suffix('.png').name})", "",
             f"Command: `python scripts/claim_width.py --saes {args.saes} --tau {args.tau:g} --n-pairs "
             f"{args.n_pairs} --out {args.out}`", ""]
    write_text(out, "\n".join(lines))
    df.to_json(out.with_suffix(".jsonl"), orient="records", lines=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
