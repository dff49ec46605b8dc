"""Pick 40 continuations per scorer from the concept check's rows (mixed steered/unsteered), score them
with the current scorers, and write docs/scorer_check/<scorer>.jsonl for hand reading; with --agreement,
read the hand labels back and print the agreement table.

    PYTHONPATH=. python scripts/scorer_check.py docs/scorer_check/concept_check.jsonl --pick
    PYTHONPATH=. python scripts/scorer_check.py docs/scorer_check/concept_check.jsonl --agreement

A reader's label per continuation: vader "positive" / "negative" / "neutral" (the scorer agrees when the
sign of VADER's compound, with |compound| < 0.05 as neutral, is the same); lexicon "yes" / "no" (does the
continuation mention the topic?); language "yes" / "no" (is it written mainly in the target language?).
"""

from __future__ import annotations

import argparse
import json
import random

from sas.concepts import get_concept
from sas.files import write_jsonl

OUT = "docs/scorer_check"
PLAN = {  # scorer -> concepts whose rows supply its 40 continuations
    "vader": ["sentiment-positive", "sentiment-negative"],
    "lexicon": ["weddings", "sports", "cooking", "music", "space", "weather", "animals", "medicine", "ocean"],
    "language": ["french", "spanish"],
}


def vader_label(compound: float) -> str:
    return "positive" if compound >= 0.05 else "negative" if compound <= -0.05 else "neutral"


def pick(rows: list[dict], n: int = 40, seed: int = 0) -> None:
    rng = random.Random(seed)
    for scorer, concepts in PLAN.items():
        seen, items = set(), []
        for r in rows:  # the unsteered texts of two concepts are often the same: read each text once
            for i, t in enumerate(r["texts"]):
                if r["concept"] in concepts and t not in seen:
                    seen.add(t)
                    items.append((r, i))
        steered = [x for x in items if x[0]["condition"] != "unsteered"]
        unsteered = [x for x in items if x[0]["condition"] == "unsteered"]
        chosen = rng.sample(steered, min(len(steered), n * 3 // 4))
        chosen += rng.sample(unsteered, min(len(unsteered), n - len(chosen)))
        out = []
        for r, i in chosen:
            # an unsteered text is the same for every concept: judge it against a concept drawn at random
            name = r["concept"] if r["condition"] != "unsteered" else rng.choice(concepts)
            c = get_concept(name)
            d = c.scorer().details([r["texts"][i]])
            out.append({"concept": name, "condition": r["condition"], "layer": r["layer"],
                        "strength": r["multiplier"], "prompt": r["prompts"][i], "text": r["texts"][i],
                        "scorer": {k: v[0] for k, v in d.items()}, "reading": None, "note": ""})
        write_jsonl(f"{OUT}/{scorer}.jsonl", out)
        print(f"{scorer}: {len(out)} continuations written to {OUT}/{scorer}.jsonl")


def agreement() -> None:
    for scorer in PLAN:
        rows = [json.loads(line) for line in open(f"{OUT}/{scorer}.jsonl")]
        agree = []
        for r in rows:
            s = r["scorer"]
            said = (vader_label(s["compound"]) if scorer == "vader" else
                    "yes" if s["mention" if scorer == "lexicon" else "identified"] else "no")
            agree.append(said == r["reading"])
        print(f"{scorer}: agrees on {sum(agree)} of {len(agree)} ({sum(agree) / len(agree):.0%})")
        if scorer == "vader":  # the sign alone, on the texts the reader found positive or negative
            polar = [(vader_label(r["scorer"]["compound"]), r["reading"]) for r in rows if r["reading"] != "neutral"]
            same = sum(a == b for a, b in polar)
            print(f"vader: sign right on {same} of {len(polar)} texts the reader found positive or negative; "
                  f"of {len(rows) - len(polar)} neutral texts VADER calls "
                  f"{sum(vader_label(r['scorer']['compound']) != 'neutral' for r in rows if r['reading'] == 'neutral')}"
                  " positive or negative")
        else:
            said = ["yes" if r["scorer"]["mention" if scorer == "lexicon" else "identified"] else "no" for r in rows]
            conf = {(a, b): sum(x == a and r["reading"] == b for x, r in zip(said, rows))
                    for a in ("yes", "no") for b in ("yes", "no")}
            print(f"{scorer}: scorer yes / reader yes {conf['yes', 'yes']}, scorer yes / reader no {conf['yes', 'no']}, "
                  f"scorer no / reader yes {conf['no', 'yes']}, scorer no / reader no {conf['no', 'no']}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("rows")
    ap.add_argument("--pick", action="store_true")
    ap.add_argument("--agreement", action="store_true")
    a = ap.parse_args()
    if a.pick:
        pick([json.loads(line) for line in open(a.rows)])
    if a.agreement:
        agreement()
