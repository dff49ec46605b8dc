"""What the SAS selection rule keeps and what it drops, for the sentiment pairs (or a CAA behaviour).

Prints the sparse_diff counts, the share of the squared difference of the mean codes that sits in
features active on both sides (which the rule drops), the cosine with the CAA vector of the decoded
full code difference and of the SAS vector, and the strongest features of each sign with the tokens
their decoder directions promote through the unembedding.

    python scripts/sas_anatomy.py --sae gemma-3-270m-L9-4k
    python scripts/sas_anatomy.py --sae gemma-3-270m-L9-4k --behavior sycophancy
"""

import argparse

import torch

import sas
from sas.activations.residual import answer_activations, last_token_activations
from sas.load.data import balance_letters, load_behavior
from sas.evaluation.features import logit_effects
from sas.activations.codes import encode
from sas.methods.sas import sparse_diff
from sas.concepts.tasks import sentiment_pairs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sae", required=True)
    p.add_argument("--behavior", help="a CAA behaviour (default: the sentiment pairs)")
    p.add_argument("--tau", type=float, default=0.1)
    p.add_argument("--top", type=int, default=6)
    args = p.parse_args()
    model = sas.load_model()
    sae = sas.load_sae(args.sae, model)
    layer = int(sae.cfg.metadata.hook_name.split(".")[1])
    if args.behavior:
        pos, neg = answer_activations(model, balance_letters(load_behavior(args.behavior)), [layer])
        pos, neg = pos[layer], neg[layer]
    else:
        pt, nt = sentiment_pairs()
        acts = last_token_activations(model, pt + nt, [layer])[layer]
        pos, neg = acts[:len(pt)], acts[len(pt):]
    zp, zn = encode(sae, pos), encode(sae, neg)
    v, info = sparse_diff(zp, zn, args.tau)
    fp, fn = (zp > 0).float().mean(0), (zn > 0).float().mean(0)
    both = (fp >= args.tau) & (fn >= args.tau)
    diff = zp.mean(0) - zn.mean(0)
    caa = pos.mean(0) - neg.mean(0)
    cos = torch.nn.functional.cosine_similarity
    print(f"{args.sae}, {args.behavior or 'sentiment'}, tau {args.tau}: {info}")
    print(f"features active on both sides: {int(both.sum())}, holding "
          f"{(diff[both].pow(2).sum() / diff.pow(2).sum()).item():.0%} of the squared mean-code difference")
    print(f"cosine with CAA: decoded full code difference {cos(diff @ sae.W_dec, caa, dim=0).item():.3f}, "
          f"SAS vector {cos(v @ sae.W_dec, caa, dim=0).item():.3f}")
    for sign in (1, -1):
        idx = (v * sign > 0).nonzero().flatten()
        idx = idx[v[idx].abs().argsort(descending=True)][:args.top]
        eff = logit_effects(model, sae, idx.tolist(), k=6)
        for _, r in eff.iterrows():
            f = int(r.feature)
            print(f"{'+' if sign > 0 else '-'} feature {f:5d}  v {v[f].item():7.1f}  fires on {fp[f].item():.0%} of "
                  f"positive, {fn[f].item():.0%} of negative  promotes {list(r.promoted)}")


if __name__ == "__main__":
    main()
