"""The README table of the concept check: per concept, the scorer's mean over the 20 continuations (rescored
with the current scorers) unsteered, with the prompting prefix, and CAA-steered at each strength, with
bootstrap 95% intervals (2,000 resamples of continuations).

    PYTHONPATH=. python scripts/concept_table.py docs/scorer_check/concept_check.jsonl
"""

from __future__ import annotations

import json
import sys

import numpy as np

from sas.concepts import get_concept


def ci(x: list[float], n: int = 2000, seed: int = 0) -> str:
    a = np.asarray(x, dtype=float)
    means = a[np.random.default_rng(seed).integers(0, len(a), (n, len(a)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return f"{a.mean():.2f} [{lo:.2f}, {hi:.2f}]"


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path)]
    order = list(dict.fromkeys(r["concept"] for r in rows))
    print("| concept | scorer | unsteered | prompting prefix | CAA layer | strength (multiplier) | CAA steered |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in order:
        c = get_concept(name)
        sc = c.scorer()
        by = {(r["condition"], r["layer"], r["multiplier"]): r for r in rows if r["concept"] == name}
        un = next(r for k, r in by.items() if k[0] == "unsteered")
        pr = next((r for k, r in by.items() if k[0] == "prompting"), None)
        for (cond, layer, s), r in sorted(((k, r) for k, r in by.items() if k[0] == "caa"), key=lambda kr: (kr[0][1], kr[0][2])):
            print(f"| {name} | {c.scorer_name} | {ci(sc.score(un['texts']))} | "
                  f"{ci(sc.score(pr['texts'])) if pr else 'not run'} | {layer} | {s} ({r['raw_multiplier']:.1f}) | "
                  f"{ci(sc.score(r['texts']))} |")


if __name__ == "__main__":
    main(sys.argv[1])
