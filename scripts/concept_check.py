"""Check that gemma-3-270m visibly follows each shipped concept: a CAA vector from the concept's pairs,
continuations of 20 tuning prompts unsteered, steered at a few multipliers, and with the prompting
baseline's prefix; the concept's scorer on each. Writes one JSON row per condition (texts included).

    PYTHONPATH=. python scripts/concept_check.py --out docs/scorer_check/concept_check.jsonl \
        --layers 6 --strengths 0.2,0.35 [--concepts weddings,french]

A strength is the size of the edit relative to the mean residual norm at that layer over the prompts'
tokens (BOS excluded): multiplier = strength * mean_norm / |vector|.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import sas
from sas.activations.residual import last_token_activations
from sas.concepts import shipped_concepts, steering_prompts
from sas.files import write_jsonl


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", default="6")
    ap.add_argument("--strengths", default="0.2,0.35")
    ap.add_argument("--concepts", default="")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--no-prefix", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = sas.load_model()
    concepts = shipped_concepts()
    names = args.concepts.split(",") if args.concepts else list(concepts)
    rows = []
    if os.path.exists(args.out):
        rows = [json.loads(line) for line in open(args.out)]
    done = {(r["concept"], r["layer"], r["multiplier"], r["condition"]) for r in rows}
    gen = dict(max_new_tokens=30, do_sample=True, top_k=50, seed=0, batch_size=20)
    unsteered: dict[tuple, list[str]] = {}

    def add(row):
        rows.append(row)
        write_jsonl(args.out, rows)
        print(f"{row['concept']:20s} L{row['layer']} x{row['multiplier']:<5} {row['condition']:9s} "
              f"score {row['score']:.3f}  ({row['seconds']:.0f} s)", flush=True)

    for name in names:
        c = concepts[name]
        prompts = steering_prompts(c, "tuning", args.n)
        scorer = c.scorer()
        key = tuple(prompts)
        if (name, None, 0.0, "unsteered") not in done:
            t0 = time.time()
            if key not in unsteered:
                unsteered[key] = sas.generate(model, prompts, **gen)
            texts = unsteered[key]
            s = scorer.score(texts)
            add({"concept": name, "layer": None, "multiplier": 0.0, "condition": "unsteered", "score": statistics.mean(s),
                 "scores": s, "prompts": prompts, "texts": texts, "seconds": time.time() - t0})
        if not args.no_prefix and (name, None, 0.0, "prompting") not in done:
            t0 = time.time()
            full = sas.generate(model, [c.prefix + p for p in prompts], **gen)
            s = scorer.score(full)
            add({"concept": name, "layer": None, "multiplier": 0.0, "condition": "prompting", "score": statistics.mean(s),
                 "scores": s, "prompts": prompts, "texts": full, "seconds": time.time() - t0})
        for layer in [int(x) for x in args.layers.split(",")]:
            vec = None
            for rel in [float(x) for x in args.strengths.split(",")]:
                if (name, layer, rel, "caa") in done:
                    continue
                t0 = time.time()
                if vec is None:
                    vec = sas.contrastive_vector(model, c.positive_texts(), c.negative_texts(), layers=[layer],
                                                 behavior=name, positions="after_prompt")
                    resid = float(last_token_activations(model, prompts, [layer], reduce="mean")[layer]
                                  .norm(dim=-1).mean())
                m = rel * resid / float(vec.directions[layer].norm())
                with sas.steer(model, vec, multipliers=m):
                    texts = sas.generate(model, prompts, **gen)
                s = scorer.score(texts)
                add({"concept": name, "layer": layer, "multiplier": rel, "raw_multiplier": m, "mean_resid_norm": resid,
                     "condition": "caa",
                     "score": statistics.mean(s), "scores": s, "prompts": prompts, "texts": texts,
                     "vector_norm": float(vec.directions[layer].norm()), "seconds": time.time() - t0})


if __name__ == "__main__":
    main()
