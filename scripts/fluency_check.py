"""Do the fluency measures agree with a reader? 80 continuations of the landed benchmark run (docs/bench: its
tuning split, 24 prompts per condition, strengths 0.02 to 0.1 of the residual norm at layers 5 and 9, bfloat16),
spread over concepts, methods, layers and strengths, each scored by every fluency measure, read by hand; then each
measure's agreement with the reading.

    PYTHONPATH=. python scripts/fluency_check.py --pick       # docs/fluency_check/ratings.jsonl, reading empty
    PYTHONPATH=. python scripts/fluency_check.py --agreement  # after reading: the table of docs/fluency_check

A reading is "fluent" (text a person could have written, on any topic and in any language, cut off mid-sentence
allowed) or "not fluent" (word salad, loops of repeated words, broken grammar, stray tokens). The measures are
scored on how well they predict "not fluent": AUC (bootstrap interval), and accuracy at the default middle budget.
Per text: ``perplexity`` = the text's perplexity given the prompt under the unsteered model (from the run's rows)
over the concept's pooled unsteered one; ``smollm2`` = the same under SmolLM2-135M-Instruct given the concept's
prefix and the prompt, over its pooled unsteered one; ``kl`` = the condition's KL budget (its vector rebuilt from
the concept's pairs, at the row's raw multiplier, on the held-out texts of sas.evaluation.fluency), 0 unsteered
and for prompting.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import numpy as np

BENCH = Path("docs/bench/bench.jsonl")
OUT = Path("docs/fluency_check")
CONCEPTS = ["weddings", "french", "sentiment-negative", "space"]
METHODS = ["caa", "actadd", "sas", "sas_dense"]
SAES = {5: "gemma-3-270m-L5-4k", 9: "gemma-3-270m-L9-4k"}
PER_CONCEPT = {"unsteered": 2, "prompt": 2, "steered": 8, "strong": 8}  # strong: 0.075 and 0.1, where text breaks


def _rows():
    rows = [json.loads(x) for x in BENCH.open()]
    texts = [json.loads(x) for x in BENCH.with_name("bench.texts.jsonl").open()]
    keys = ("method", "concept", "layer", "multiplier", "split")
    out = []
    for r in rows:
        if r["split"] != "tuning" or "skipped" in r or r["concept"] not in CONCEPTS:
            continue
        t = next((t for t in texts if all(t.get(k) == r.get(k) for k in keys) and len(t["texts"]) == r["n"]), None)
        if t is not None:
            out.append((r, t["texts"]))
    return out


def pick() -> None:
    from sas.concepts import get_concept, steering_prompts
    from sas.evaluation.fluency import fluency_nll

    rng = random.Random(0)
    rows = _rows()
    chosen = []
    for c in CONCEPTS:
        prompts = steering_prompts(get_concept(c), "tuning", 24)
        mine = [(r, t) for r, t in rows if r["concept"] == c]
        unst = next((r, t) for r, t in mine if r["multiplier"] == 0)
        prompt = next((r, t) for r, t in mine if r["method"] == "prompt" and r["multiplier"] == 1)
        steered = [(r, t) for r, t in mine if r["method"] in METHODS and r["multiplier"] > 0]
        picks = [(unst, i) for i in rng.sample(range(24), PER_CONCEPT["unsteered"])]
        picks += [(prompt, i) for i in rng.sample(range(24), PER_CONCEPT["prompt"])]
        weak = [rt for rt in steered if rt[0]["multiplier"] < 0.075]
        strong = [rt for rt in steered if rt[0]["multiplier"] >= 0.075]
        picks += [(rt, rng.randrange(24)) for rt in rng.sample(weak, PER_CONCEPT["steered"])]
        picks += [(rt, rng.randrange(24)) for rt in rng.sample(strong, PER_CONCEPT["strong"])]
        # SmolLM2 on every unsteered text of the concept (the ratio's denominator) and on the picked ones
        prefix = get_concept(c).prefix
        base = fluency_nll([prefix + p for p in prompts], unst[1])
        base_ppl = math.exp(base[:, 0].sum() / base[:, 1].sum())
        fl = fluency_nll([prefix + prompts[i] for _, i in picks], [t[i] for (_, t), i in picks])
        for ((r, t), i), (nll, n) in zip(picks, fl.tolist()):
            chosen.append({"concept": c, "method": "unsteered" if r["multiplier"] == 0 else r["method"],
                           "layer": r["layer"], "multiplier": r["multiplier"], "raw_multiplier": r.get("raw_multiplier"),
                           "prompt": prompts[i], "text": t[i],
                           "perplexity": math.exp(r["nll"][i] / max(r["n_tokens"][i], 1)) / unst[0]["perplexity"],
                           "smollm2": math.exp(nll / max(n, 1)) / base_ppl})
    rng.shuffle(chosen)  # read in random order: the condition does not show
    with (OUT / "ratings.jsonl").open("w") as f:
        for r in chosen:
            f.write(json.dumps({**r, "kl": None, "fluent": None, "reason": ""}, ensure_ascii=False) + "\n")


def conditions() -> None:
    """Each rating's ``smollm2 (condition)``: SmolLM2's pooled perplexity over all 24 continuations of the text's
    condition, over the unsteered condition's (what a budget reads), in ``conditions.json`` beside the ratings."""
    from sas.concepts import get_concept, steering_prompts
    from sas.evaluation.fluency import fluency_nll

    recs = [json.loads(x) for x in (OUT / "ratings.jsonl").open()]
    rows = {(r["concept"], r["method"], r["layer"], r["multiplier"]): (r, t) for r, t in _rows()}
    out = {}
    keys = sorted({(r["concept"], "caa" if r["method"] == "unsteered" else r["method"], r["layer"], r["multiplier"])
                   for r in recs} | {(c, "caa", 5, 0.0) for c in CONCEPTS})
    for key in [k for k in keys if k[3] == 0] + [k for k in keys if k[3] != 0]:  # the denominators first
        c = get_concept(key[0])
        prompts = steering_prompts(c, "tuning", 24)
        nll = fluency_nll([c.prefix + p for p in prompts], rows[key][1])
        out[str(key)] = math.exp(nll[:, 0].sum() / nll[:, 1].sum())
        print(key, round(out[str(key)], 2), flush=True)
        (OUT / "conditions.json").write_text(json.dumps(out, indent=1))  # as it goes: a stopped run keeps it


def kl() -> None:
    """Fill each rating's ``kl``: the condition's vector rebuilt (as the benchmark builds it), at its raw multiplier."""
    import torch

    from sas.evaluation.fluency import steering_kl
    from sas.load.models import load_model
    from sas.load.saes import load_sae
    from sas.methods.registry import build_vector, get_method
    from sas.runs.items import ConceptItem

    torch.set_num_threads(2)
    recs = [json.loads(x) for x in (OUT / "ratings.jsonl").open()]
    model = load_model("gemma-3-270m")
    saes = {x: load_sae(n, model) for x, n in SAES.items()}
    todo = sorted({(r["concept"], r["method"]) for r in recs if r["method"] in METHODS})
    for r in recs:
        if r["method"] not in METHODS:
            r["kl"] = 0.0
    contrasts = {}  # one per concept: its activations are computed once for all methods
    for concept, method in todo:
        contrast = contrasts.setdefault(concept, ConceptItem(concept).contrast)
        vec = build_vector(model, method, contrast, sorted(SAES), saes if get_method(method).needs_sae else None)
        for layer in SAES:
            mine = [r for r in recs if (r["concept"], r["method"], r["layer"]) == (concept, method, layer)]
            mults = sorted({r["raw_multiplier"] for r in mine})
            if not mults:
                continue
            got = dict(zip(mults, steering_kl(model, vec, layer, mults)))
            for r in mine:
                r["kl"] = got[r["raw_multiplier"]]
            print(concept, method, layer, {round(m, 3): round(v, 4) for m, v in got.items()}, flush=True)
        with (OUT / "ratings.jsonl").open("w") as f:  # after each vector: a stopped run keeps what it measured
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


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
    rng = np.random.default_rng(0)
    rows = {(r["concept"], r["method"], r["layer"], r["multiplier"]): r for r, _ in _rows()}
    unst = {r["concept"]: r for r in rows.values() if r["multiplier"] == 0}
    for r in recs:  # the budget reads the condition's pooled perplexity, not the text's
        m = "caa" if r["method"] == "unsteered" else r["method"]
        row = rows[(r["concept"], m, r["layer"], r["multiplier"])]
        r["perplexity (condition)"] = row["perplexity"] / unst[r["concept"]]["perplexity"]
        if (OUT / "conditions.json").exists():
            cond = json.loads((OUT / "conditions.json").read_text())
            key, base = str((r["concept"], m, r["layer"], r["multiplier"])), str((r["concept"], "caa", 5, 0.0))
            if key in cond and base in cond:
                r["smollm2 (condition)"] = cond[key] / cond[base]
    measures = {**MEASURES, "perplexity (condition)": MEASURES["perplexity"],
                "smollm2 (condition)": MEASURES["smollm2"]}
    common = [r for r in recs if all(r.get(k) is not None for k in measures)]
    return _table(recs, measures, rng) + f"\n\nOn the {len(common)} texts that have every measure:\n\n" + \
        _table(common, measures, rng)


def _table(recs, measures, rng) -> str:
    lines = ["| measure | texts | AUC [95% interval] | threshold | accuracy [95% interval] |",
             "| --- | --- | --- | --- | --- |"]
    for name, m in measures.items():
        have = [r for r in recs if r.get(name) is not None]
        if not have:
            lines.append(f"| {name} | 0 | | | |")
            continue
        y = np.array([0 if r["fluent"] else 1 for r in have])
        x = np.array([r[name] for r in have], dtype=float)
        boots = []
        for _ in range(2000):
            i = rng.integers(0, len(y), len(y))
            if 0 < y[i].sum() < len(i):
                boots.append(auc(x[i], y[i]))
        thr = m.budgets[1]
        k = int(((x > thr) == (y == 1)).sum())
        lo, hi = wilson(k, len(y))
        a_lo, a_hi = np.quantile(boots, [0.025, 0.975])
        lines.append(f"| {name} | {len(y)} ({int(y.sum())} not fluent) | {auc(x, y):.2f} [{a_lo:.2f}, {a_hi:.2f}] | "
                     f"{thr:g}{'x' if m.ratio else ' nats'} | {k}/{len(y)} ({k / len(y):.0%}) [{lo:.0%}, {hi:.0%}] |")
    return "\n".join(lines)

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--pick", action="store_true")
    g.add_argument("--kl", action="store_true")
    g.add_argument("--conditions", action="store_true")
    g.add_argument("--agreement", action="store_true")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if a.kl:
        kl()
    elif a.conditions:
        conditions()
    elif a.pick:
        pick()
    else:
        print(agreement())
