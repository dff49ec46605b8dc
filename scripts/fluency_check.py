"""Do the fluency measures agree with a reader? Generate continuations over methods, concepts and strengths (with
every fluency measure on each row), pick 80 for hand reading, and (after reading) report each measure's agreement.

    PYTHONPATH=. python scripts/fluency_check.py --generate   # docs/fluency_check/rows.jsonl (+ .texts.jsonl)
    PYTHONPATH=. python scripts/fluency_check.py --pick       # docs/fluency_check/ratings.jsonl, reading empty
    PYTHONPATH=. python scripts/fluency_check.py --agreement  # after reading: the table of docs/fluency_check

A reading is "fluent" (grammatical, coherent English or target-language text a person could have written, on
any topic) or "not fluent" (word salad, repetition loops, broken grammar, mixed-up tokens); the measures are
scored on how well they predict "not fluent": AUC (with a bootstrap interval), and accuracy when a text counts
as not fluent above the measure's middle budget.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import numpy as np

OUT = Path("docs/fluency_check")
CONCEPTS = ["weddings", "french", "sentiment-negative", "space", "sports"]
METHODS = ["caa", "actadd", "sas", "prompt"]
STRENGTHS = [0.05, 0.15, 0.3, 0.6]
N_PICK = 80


def generate() -> None:
    from sas.runs.grid import Grid, run_grid

    mults = {m: ([0.0, 1.0] if m == "prompt" else [0.0, *STRENGTHS]) for m in METHODS}
    grid = Grid("concept", CONCEPTS, METHODS, [5], mults, saes={5: "gemma-3-270m-L5-4k"},
                eval_settings={"split": "tuning", "n_prompts": 3, "max_new_tokens": 16, "seed": 0,
                               "n_calibration": 24, "fluency": ["kl", "smollm2"]})
    run_grid(grid, OUT / "rows.jsonl")


def _texts() -> list[dict]:
    """One record per continuation: its condition, prompt, text and the per-text values of each measure."""
    from sas.concepts import get_concept, steering_prompts

    rows = [json.loads(x) for x in (OUT / "rows.jsonl").open()]
    texts = [json.loads(x) for x in (OUT / "rows.texts.jsonl").open()]
    unst = {r["concept"]: r for r in rows if r["multiplier"] == 0 and "skipped" not in r}
    out = []
    for r in rows:
        if "skipped" in r:
            continue
        t = next((t for t in texts if all(t.get(k) == r.get(k) for k in ("method", "concept", "layer",
                                                                         "multiplier"))), None)
        if t is None:
            continue
        u = unst[r["concept"]]
        prompts = steering_prompts(get_concept(r["concept"]), "tuning", r["n_prompts"])
        for i, text in enumerate(t["texts"]):
            ppl = math.exp(r["nll"][i] / max(r["n_tokens"][i], 1))
            fl = math.exp(r["fluency_nll"][i] / max(r["fluency_tokens"][i], 1))
            out.append({"concept": r["concept"], "method": r["method"], "multiplier": r["multiplier"],
                        "prompt": prompts[i], "text": text,
                        "perplexity": ppl / u["perplexity"], "smollm2": fl / u["fluency_ppl"], "kl": r["kl"]})
    return out


def pick() -> None:
    recs = _texts()
    random.Random(0).shuffle(recs)
    # every condition once before any twice: the sample spans methods, concepts and strengths
    seen, first, rest = set(), [], []
    for r in recs:
        k = (r["concept"], r["method"], r["multiplier"])
        (rest if k in seen else first).append(r)
        seen.add(k)
    chosen = (first + rest)[:N_PICK]
    with (OUT / "ratings.jsonl").open("w") as f:
        for r in chosen:
            f.write(json.dumps({**r, "fluent": None, "reason": ""}, ensure_ascii=False) + "\n")


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """P(a not-fluent text scores higher than a fluent one), ties half."""
    pos, neg = x[y == 1], x[y == 0]
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg)))


def wilson(k: int, n: int) -> tuple[float, float]:
    z, p = 1.96, k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def agreement() -> str:
    from sas.evaluation.fluency import MEASURES

    recs = [json.loads(x) for x in (OUT / "ratings.jsonl").open()]
    if any(r["fluent"] is None for r in recs):
        raise SystemExit("ratings.jsonl has unread items (fluent: null)")
    y = np.array([0 if r["fluent"] else 1 for r in recs])
    rng = np.random.default_rng(0)
    lines = ["| measure | AUC [95% interval] | threshold | accuracy [95% interval] |", "| --- | --- | --- | --- |"]
    for name, m in MEASURES.items():
        x = np.array([r[name] for r in recs], dtype=float)
        boots = []
        for _ in range(2000):
            i = rng.integers(0, len(y), len(y))
            if 0 < y[i].sum() < len(i):
                boots.append(auc(x[i], y[i]))
        thr = m.budgets[1]
        k = int(((x > thr) == (y == 1)).sum())
        lo, hi = wilson(k, len(y))
        a_lo, a_hi = np.quantile(boots, [0.025, 0.975])
        lines.append(f"| {name} | {auc(x, y):.2f} [{a_lo:.2f}, {a_hi:.2f}] | {thr:g}{'x' if m.ratio else ' nats'} | "
                     f"{k}/{len(y)} ({k / len(y):.0%}) [{lo:.0%}, {hi:.0%}] |")
    lines.append(f"\n{int(y.sum())} of {len(y)} read as not fluent.")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--generate", action="store_true")
    g.add_argument("--pick", action="store_true")
    g.add_argument("--agreement", action="store_true")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if a.generate:
        generate()
    elif a.pick:
        pick()
    else:
        print(agreement())
