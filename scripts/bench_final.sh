#!/usr/bin/env bash
# The benchmark behind docs/bench: every method at layers 5 and 9 on the default 16k TopK SAEs
# (docs/bench/), then the same protocol and seeds on the first 4k JumpReLU SAEs (docs/bench/old-4k/),
# without sas_relu (a TopK-only method). Rerun to resume: every condition is appended to the rows as it
# finishes, and each vector to the vector cache beside them.
#
#   bash scripts/bench_final.sh            # from the repository root, in the installed environment
#
# 1. What the feature-selection methods read, once per SAE and cached (a no-op after): output scores,
#    activation statistics and SAE-TS's effect map, about 40 CPU-minutes for a 16k SAE, two at a time.
#    A resumed run needs no effect map for the SAE-TS vectors already in its vector cache: STATS=old computes
#    them for the 4k SAEs only (the 16k run's SAE-TS vectors are built), STATS=none for none.
# 2. The two runs on Ray (two workers on this machine) at the default budget (1.5x the unsteered
#    perplexity: every target is read there). The methods that use no SAE (CAA, ActAdd, prompting) do not
#    depend on the SAE set: their rows are copied from the first run into the second. On a 2-core AVX2 CPU in
#    float32 a tuning row (48 prompts, 16 tokens) cost about 38 CPU-s and a test row (250 prompts) about 200
#    with the first perplexity pass (a log_softmax per continuation); since it streams the vocabulary a test
#    row costs about 150 (134 to 155 CPU-s, generation 80 to 95 of them), so this pass takes about 40
#    CPU-hours for both SAE sets (about 20 hours on two workers); the published run is this pass.
#    BUDGETS=1.25,1.5,2 adds the other two budgets afterwards: the grid extends until they are bracketed and
#    their choices are tested, reusing every row already there (a budget is not part of a row), so the
#    result equals one run at three budgets.
# 3. Both reports again, with features.md (what each sparse vector is made of), without Ray: nothing is
#    generated then.
# OUT (default docs/bench) moves the results.
set -euo pipefail
out=${OUT:-docs/bench}
common=(--threads 1 --layers 5,9)
sparse=sas,sas_dense,sas_diff,sas_os,sas_clamp,sae_ts,sae_ts_pinv,sas_dtc
new=(bench "${common[@]}" --methods "caa,actadd,prompt,$sparse,sas_relu"
     --sae gemma-3-270m-L5-16k-topk,gemma-3-270m-L9-16k-topk --out "$out/bench.jsonl" --report "$out")
old=(bench "${common[@]}" --methods "caa,actadd,prompt,$sparse"
     --sae gemma-3-270m-L5-4k,gemma-3-270m-L9-4k --out "$out/old-4k/bench.jsonl" --report "$out/old-4k")

stats() {  # two SAEs at a time, one per core
    python scripts/sae_stats.py --corpus ../shared/data/corpus/enwiki-2014 --sae "gemma-3-270m-$1" & first=$!
    python scripts/sae_stats.py --corpus ../shared/data/corpus/enwiki-2014 --sae "gemma-3-270m-$2"
    wait "$first"
}
case "${STATS:-all}" in
    all) stats L5-16k-topk L9-16k-topk; stats L5-4k L9-4k ;;
    old) stats L5-4k L9-4k ;;
    none) ;;
    *) echo "STATS is all, old or none, not '$STATS'" >&2; exit 2 ;;
esac
copy_dense() {  # the SAE-free methods' rows (and their texts) that the second run does not have yet
python - "$out/bench.jsonl" "$out/old-4k/bench.jsonl" <<'PY'
import json, sys
from pathlib import Path
from sas.runs.store import ResultStore
src, dst = ResultStore(sys.argv[1], kind="concept"), ResultStore(sys.argv[2], kind="concept")
texts = {}
if src.texts_path.exists():
    for line in src.texts_path.read_text().splitlines():
        t = json.loads(line)
        texts[(t["method"], t["concept"], t["layer"], t["multiplier"], t["split"])] = t["texts"]
copied = 0
for row in src.rows:
    if row["method"] in ("caa", "actadd", "prompt") and dst.find({k: row[k] for k in ("method", "concept",
            "layer", "multiplier", "split", "n_prompts", "seed", "max_new_tokens")}) is None:
        dst.append(row, texts.get((row["method"], row["concept"], row["layer"], row["multiplier"], row["split"])))
        copied += 1
print(f"copied {copied} SAE-free rows into {sys.argv[2]}")
PY
}

budgets=${BUDGETS:-1.5}
for pass in 1.5 "$budgets"; do
    sas "${new[@]}" --budgets "$pass" --ray --no-features
    copy_dense
    sas "${old[@]}" --budgets "$pass" --ray --no-features
    [ "$pass" = "$budgets" ] && break
done
sas "${new[@]}" --budgets "$budgets"   # nothing left to generate: the report again, with features.md
sas "${old[@]}" --budgets "$budgets"
