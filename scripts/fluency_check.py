"""Do the fluency measures agree with a reader? Continuations of a benchmark run's tuning split, spread over
concepts, methods, layers and strengths, each scored by every fluency measure, read by hand; then each measure's
agreement with the reading. Two samples:

- ``first``: 80 continuations of the first run (docs/bench/first-run: 24 tuning prompts per condition, strengths
  0.02 to 0.1 of the residual norm at layers 5 and 9, the first 4k SAEs, bfloat16), four concepts;
- ``languages``: 40 continuations of the final run (docs/bench: 48 tuning prompts, the grid extended past 0.1, the
  default SAEs), French and Spanish, most of them from conditions that switch the language: the case the first
  sample could not test (is fluent French charged by a budget?).

    PYTHONPATH=. python scripts/fluency_check.py --pick       # docs/fluency_check/ratings.jsonl, reading empty
    PYTHONPATH=. python scripts/fluency_check.py --agreement  # after reading: the table of docs/fluency_check
    PYTHONPATH=. python scripts/fluency_check.py --sample languages --pick   # ratings_languages.jsonl (and so on)

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
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sas.files import write_jsonl, write_text

OUT = Path("docs/fluency_check")


@dataclass(frozen=True)
class Sample:
    bench: Path
    concepts: tuple
    methods: tuple
    saes: dict
    n_tune: int
    per_concept: dict  # how many texts of each kind per concept
    strong: tuple  # the steered conditions the "strong" picks come from: (row key, lowest value)
    suffix: str = ""  # of the ratings and conditions files

    def is_strong(self, row: dict) -> bool:
        return row[self.strong[0]] >= self.strong[1]

    @property
    def ratings(self) -> Path:
        return OUT / f"ratings{self.suffix}.jsonl"

    @property
    def conditions(self) -> Path:
        return OUT / f"conditions{self.suffix}.json"


ALL_METHODS = ("caa", "actadd", "sas", "sas_dense", "sas_diff", "sas_os", "sas_clamp", "sae_ts", "sae_ts_pinv",
               "sas_dtc", "sas_relu")
SAMPLES = {
    "first": Sample(Path("docs/bench/first-run/bench.jsonl"), ("weddings", "french", "sentiment-negative", "space"),
                    ("caa", "actadd", "sas", "sas_dense"), {5: "gemma-3-270m-L5-4k", 9: "gemma-3-270m-L9-4k"}, 24,
                    {"unsteered": 2, "prompt": 2, "steered": 8, "strong": 8}, ("multiplier", 0.075)),  # where text breaks
    "languages": Sample(Path("docs/bench/bench.jsonl"), ("french", "spanish"), ALL_METHODS,
                        {5: "gemma-3-270m-L5-16k-topk", 9: "gemma-3-270m-L9-16k-topk"}, 48,
                        {"unsteered": 2, "prompt": 2, "steered": 4, "strong": 12}, ("score", 0.2),  # switches language
                        "_languages"),
}
S = SAMPLES["first"]  # set by --sample


def _rows():
    if not S.bench.exists():
        raise SystemExit(f"{S.bench} is missing: this sample reads that benchmark run's rows and texts")
    rows = [json.loads(x) for x in S.bench.open()]
    texts: dict[tuple, list[str]] = {}
    keys = ("method", "concept", "layer", "multiplier", "split")
    for line in S.bench.with_name(S.bench.stem + ".texts.jsonl").open():
        t = json.loads(line)
        if t.get("split") == "tuning" and t.get("concept") in S.concepts:
            texts.setdefault(tuple(t.get(k) for k in keys), []).append(t["texts"])
    out = []
    for r in rows:
        if r["split"] != "tuning" or "skipped" in r or r["concept"] not in S.concepts:
            continue
        t = next((t for t in texts.get(tuple(r.get(k) for k in keys), []) if len(t) == r["n"]), None)
        if t is not None:
            out.append((r, t))
    return out


def pick() -> None:
    from sas.concepts import get_concept, steering_prompts
    from sas.evaluation.fluency import fluency_nll

    rng = random.Random(0)
    rows = _rows()
    chosen = []
    for c in S.concepts:
        prompts = steering_prompts(get_concept(c), "tuning", S.n_tune)
        mine = [(r, t) for r, t in rows if r["concept"] == c]
        unst = next((r, t) for r, t in mine if r["multiplier"] == 0)
        prompt = next((r, t) for r, t in mine if r["method"] == "prompt" and r["multiplier"] == 1)
        steered = [(r, t) for r, t in mine if r["method"] in S.methods and r["multiplier"] > 0]
        n, per = S.n_tune, S.per_concept
        picks = [(unst, i) for i in rng.sample(range(n), per["unsteered"])]
        picks += [(prompt, i) for i in rng.sample(range(n), per["prompt"])]
        weak = [rt for rt in steered if not S.is_strong(rt[0])]
        strong = [rt for rt in steered if S.is_strong(rt[0])]
        picks += [(rt, rng.randrange(n)) for rt in rng.sample(weak, per["steered"])]
        picks += [(rt, rng.randrange(n)) for rt in rng.sample(strong, per["strong"])]
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
    write_jsonl(S.ratings, ({**r, "kl": None, "fluent": None, "reason": ""} for r in chosen))


def _condition_keys(recs: list[dict]) -> list[tuple]:
    """The (concept, method, layer, multiplier) of every rated text's condition, the unsteered ones first."""
    keys = sorted({(r["concept"], "caa" if r["method"] == "unsteered" else r["method"], r["layer"], r["multiplier"])
                   for r in recs} | {(c, "caa", 5, 0.0) for c in S.concepts})
    return [k for k in keys if k[3] == 0] + [k for k in keys if k[3] != 0]


def conditions() -> None:
    """Each rating's ``smollm2 (condition)``: SmolLM2's pooled perplexity over all the tuning continuations of the
    text's condition, over the unsteered condition's (what a budget reads), in ``conditions*.json`` beside the
    ratings."""
    from sas.concepts import get_concept, steering_prompts
    from sas.evaluation.fluency import fluency_nll

    recs = [json.loads(x) for x in S.ratings.open()]
    rows = {(r["concept"], r["method"], r["layer"], r["multiplier"]): (r, t) for r, t in _rows()}
    out = {}
    for key in _condition_keys(recs):
        c = get_concept(key[0])
        prompts = steering_prompts(c, "tuning", S.n_tune)
        nll = fluency_nll([c.prefix + p for p in prompts], rows[key][1])
        out[str(key)] = math.exp(nll[:, 0].sum() / nll[:, 1].sum())
        print(key, round(out[str(key)], 2), flush=True)
        write_text(S.conditions, json.dumps(out, indent=1))  # as it goes: a stopped run keeps it


def prefixed() -> None:
    """A candidate measure that should not charge a language: the continuation's perplexity under the unsteered
    gemma-3-270m (a multilingual model) given the concept's prefix and the prompt ("The following text is written in
    French. ..."), over the unsteered condition's. Per text (``prefixed`` in the ratings) and pooled over the
    condition's tuning continuations (``prefixed (condition)``, in ``conditions*_prefixed.json``)."""
    import torch

    from sas.concepts import get_concept, steering_prompts
    from sas.forward.likelihood import continuation_nll
    from sas.load.models import load_model

    torch.set_num_threads(1)
    with S.bench.open() as f:  # in the run's own dtype, as its perplexity was computed
        model = load_model("gemma-3-270m", dtype=json.loads(f.readline()).get("dtype", "float32"))
    recs = [json.loads(x) for x in S.ratings.open()]
    rows = {(r["concept"], r["method"], r["layer"], r["multiplier"]): (r, t) for r, t in _rows()}
    path = S.conditions.with_name(S.conditions.stem + "_prefixed.json")
    out = json.loads(path.read_text()) if path.exists() else {}
    per_text = {}
    for key in _condition_keys(recs):
        c = get_concept(key[0])
        prompts = steering_prompts(c, "tuning", S.n_tune)
        nll = continuation_nll(model, [c.prefix + p for p in prompts], rows[key][1])
        out[str(key)] = math.exp(nll[:, 0].sum() / nll[:, 1].sum())
        per_text[key] = nll
        print(key, round(out[str(key)] / out[str((key[0], "caa", 5, 0.0))], 2), flush=True)
        write_text(path, json.dumps(out, indent=1))  # as it goes: a stopped run keeps it
    for r in recs:
        key = (r["concept"], "caa" if r["method"] == "unsteered" else r["method"], r["layer"], r["multiplier"])
        i = steering_prompts(get_concept(r["concept"]), "tuning", S.n_tune).index(r["prompt"])
        nll, n = per_text[key][i].tolist()
        r["prefixed"] = math.exp(nll / max(n, 1)) / out[str((r["concept"], "caa", 5, 0.0))]
    write_jsonl(S.ratings, recs)


def kl() -> None:
    """Fill each rating's ``kl``: the condition's vector rebuilt (as the benchmark builds it), at its raw multiplier."""
    import torch

    from sas.evaluation.fluency import steering_kl
    from sas.load.models import load_model
    from sas.load.saes import load_sae
    from sas.methods.registry import build_vector, get_method
    from sas.runs.items import ConceptItem

    torch.set_num_threads(2)
    recs = [json.loads(x) for x in S.ratings.open()]
    model = load_model("gemma-3-270m")
    saes = {x: load_sae(n, model) for x, n in S.saes.items()}
    todo = sorted({(r["concept"], r["method"]) for r in recs if r["method"] in S.methods})
    for r in recs:
        if r["method"] not in S.methods:
            r["kl"] = 0.0
    contrasts = {}  # one per concept: its activations are computed once for all methods
    for concept, method in todo:
        contrast = contrasts.setdefault(concept, ConceptItem(concept).contrast)
        vec = build_vector(model, method, contrast, sorted(S.saes), saes if get_method(method).needs_sae else None)
        for layer in S.saes:
            mine = [r for r in recs if (r["concept"], r["method"], r["layer"]) == (concept, method, layer)]
            mults = sorted({r["raw_multiplier"] for r in mine})
            if not mults:
                continue
            got = dict(zip(mults, steering_kl(model, vec, layer, mults)))
            for r in mine:
                r["kl"] = got[r["raw_multiplier"]]
            print(concept, method, layer, {round(m, 3): round(v, 4) for m, v in got.items()}, flush=True)
        write_jsonl(S.ratings, recs)  # after each vector: a stopped run keeps what it measured


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

    recs = [json.loads(x) for x in S.ratings.open()]
    if any(r["fluent"] is None for r in recs):
        raise SystemExit(f"{S.ratings} has unread items (fluent: null)")
    rng = np.random.default_rng(0)
    rows = {(r["concept"], r["method"], r["layer"], r["multiplier"]): (r, t) for r, t in _rows()}
    unst = {r["concept"]: r for r, _ in rows.values() if r["multiplier"] == 0}
    stale = 0
    for r in recs:  # the budget reads the condition's pooled perplexity, not the text's
        m = "caa" if r["method"] == "unsteered" else r["method"]
        row, texts = rows.get((r["concept"], m, r["layer"], r["multiplier"]), (None, []))
        if r["text"] in texts:  # only from the run the text was drawn from
            r["perplexity (condition)"] = row["perplexity"] / unst[r["concept"]]["perplexity"]
        else:
            stale += 1
        key, base = str((r["concept"], m, r["layer"], r["multiplier"])), str((r["concept"], "caa", 5, 0.0))
        for name, path in (("smollm2 (condition)", S.conditions),
                           ("prefixed (condition)", S.conditions.with_name(S.conditions.stem + "_prefixed.json"))):
            cond = json.loads(path.read_text()) if path.exists() else {}
            if key in cond and base in cond:
                r[name] = cond[key] / cond[base]
    measures = {**MEASURES, "perplexity (condition)": MEASURES["perplexity"],
                "smollm2 (condition)": MEASURES["smollm2"]}
    if any("prefixed" in r for r in recs):  # the languages sample's candidate (--prefixed)
        measures |= {"prefixed": MEASURES["perplexity"], "prefixed (condition)": MEASURES["perplexity"]}
    measures = {k: m for k, m in measures.items() if any(r.get(k) is not None for r in recs)}  # kl: first only
    common = [r for r in recs if all(r.get(k) is not None for k in measures)]
    if stale:
        print(f"{stale} of {len(recs)} rated texts are not in {S.bench} (another run is there now): no "
              "'perplexity (condition)' for them", file=sys.stderr)
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
    g.add_argument("--prefixed", action="store_true")
    g.add_argument("--agreement", action="store_true")
    ap.add_argument("--sample", choices=sorted(SAMPLES), default="first")
    a = ap.parse_args()
    S = SAMPLES[a.sample]
    OUT.mkdir(parents=True, exist_ok=True)
    if a.kl:
        kl()
    elif a.conditions:
        conditions()
    elif a.prefixed:
        prefixed()
    elif a.pick:
        pick()
    else:
        print(agreement())
