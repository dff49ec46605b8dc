"""Compute and cache the per-SAE statistics the feature-selection rules and edits need, and print their cost:
output scores and ΔToken Confidence (all features), activation statistics (clamp targets) and the SAE-TS effect
map of the SAE's layer.

    python scripts/sae_stats.py --sae gemma-3-270m-L9-16k --sae gemma-3-270m-L5-4k \
        --corpus ../shared/data/corpus/enwiki-2014 --what output_scores,feature_stats,effect_map --vectors 1024

``--corpus`` (Wikipedia *training* shards; a held-out folder is refused) is needed for the effect map only.
``--ship`` copies the results into ``saes/<name>/sas_cache/`` (the copy sas reads first for registry SAEs).
Everything is cached (keyed by the SAE's weights sha256): a second run only reads.
"""

import argparse
import itertools
import json
import shutil
import time
from pathlib import Path

import torch

from sas.steering.effects import effect_map
from sas.activations.feature_stats import feature_stats
from sas.steering.output_scores import delta_token_confidence, output_scores
from sas.activations.sae_cache import SHIPPED
from sas.load.models import load_model
from sas.load.saes import SAE_DIR, load_sae, registry

SHIP = ("output_scores", "delta_token_confidence", "feature_stats")  # small; effect maps stay in the cache
WHAT = ("output_scores", "delta_token_confidence", "feature_stats", "effect_map")


def corpus_texts(path: Path, limit: int = 2000):
    if "heldout" in str(path):
        raise SystemExit(f"{path} is held out (measurement only): pass the training shards, e.g. "
                         "../shared/data/corpus/enwiki-2014")
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise SystemExit(f"no .jsonl files at {path}; pass --corpus a folder of jsonl lines with a 'text' field")

    def rows():
        for f in files:
            for line in open(f, encoding="utf-8"):
                if line.strip():
                    yield json.loads(line).get("text", "")

    return list(itertools.islice((t for t in rows() if t.strip()), limit))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sae", action="append", required=True)
    p.add_argument("--what", default=",".join(WHAT))
    p.add_argument("--corpus", type=Path, help="Wikipedia training text (jsonl folder), for the effect map")
    p.add_argument("--vectors", type=int, default=1024, help="decoder rows measured for the effect map")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--ship", action="store_true", help="copy the cached files into saes/<name>/sas_cache/")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    what = args.what.split(",")
    bad = set(what) - set(WHAT)
    if bad:
        raise SystemExit(f"unknown --what {sorted(bad)}; choose from {WHAT}")
    if "effect_map" in what and args.corpus is None:
        raise SystemExit("the effect map needs --corpus (Wikipedia training shards, e.g. "
                         "../shared/data/corpus/enwiki-2014)")
    texts = corpus_texts(args.corpus) if args.corpus else None
    model = load_model("gemma-3-270m", dtype=args.dtype)
    for name in args.sae:
        sae = load_sae(name, model)
        for w in what:
            wall, cpu = time.perf_counter(), time.process_time()
            if w == "output_scores":
                s = output_scores(model, sae, rebuild=args.rebuild, progress=True)
                q = s.quantile(torch.tensor([0.25, 0.5, 0.75])).tolist()
                info = f"quartiles {[f'{v:.2e}' for v in q]}, {(s >= 0.01).float().mean():.1%} >= 0.01"
            elif w == "delta_token_confidence":
                s = delta_token_confidence(model, sae, rebuild=args.rebuild, progress=True)
                info = f"{(s > 0).float().mean():.1%} of features raise the next token's confidence"
            elif w == "feature_stats":
                st = feature_stats(model, sae, rebuild=args.rebuild)
                info = f"{st.n_positions} positions, {(st.frequency == 0).float().mean():.1%} never active"
            else:
                em = effect_map(model, sae, texts, n_vectors=args.vectors, rebuild=args.rebuild, progress=True)
                info = (f"held-out explained variance {em.explained_variance:.3f} "
                        f"[{em.ev_interval[0]:.3f}, {em.ev_interval[1]:.3f}] ({em.meta['n_test']} vectors), "
                        f"scale {em.scale:.0f}, ridge {em.meta['ridge']}, built in {em.meta.get('cpu_seconds')} CPU-s")
            print(f"{name} {w}: {time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} CPU-s "
                  f"(this call); {info}", flush=True)
        if args.ship and name in registry():
            from sas.activations.sae_cache import sae_cache_dir

            dst = SAE_DIR / registry()[name].get("folder", name) / SHIPPED
            dst.mkdir(exist_ok=True)
            for f in sae_cache_dir(sae, SHIPPED).glob("*.safetensors"):
                if f.name.startswith(SHIP):
                    shutil.copy2(f, dst / f.name)
                    print("shipped", dst / f.name)


if __name__ == "__main__":
    main()
