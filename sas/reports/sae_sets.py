"""Two ``sas bench`` runs that differ only in their SAEs, side by side: does a sparse verdict survive better SAEs?

Both runs share the concepts, prompts, seeds, methods, layers and budgets, so each method's test scores on the two
SAE sets are paired prompt by prompt: per concept, method and budget the report gives the score on each set and
the paired difference (second minus first) with its 95% bootstrap interval, and per method the win, tie, loss,
underpowered and unreached counts against CAA on each set, with the best sparse method's tally.

    from sas.reports.sae_sets import compare_lines
    lines = compare_lines(old_result, new_result, ("4k SAEs, 1.5M tokens", "16k SAEs, 30M tokens"))
"""

from __future__ import annotations

from ..evaluation.stats import paired_diff_ci
from .bench import SPARSE, _budget_text, _tally, best_sparse, counts, table


def _score(rec: dict | None) -> str:
    if rec is None:
        return ""
    if "score" not in rec:
        return "not reached"
    return f"{rec['score']:.2f} [{rec['lo']:.2f}, {rec['hi']:.2f}] (L{rec['layer']}, {rec['strength']:g})"


def paired_rows(result_a, result_b, methods=SPARSE, records=None) -> list[dict]:
    """Per concept, method and budget present in both runs: the two test records (:func:`~sas.reports.bench.table`,
    or ``records``: the two runs' tables if already made) and, where both reached the budget, the paired difference
    of their test scores (``diff``, ``lo``, ``hi``)."""
    rec_a, rec_b = records or (table(result_a), table(result_b))
    ta = {(r["concept"], r["method"], r["budget"]): r for r in rec_a}
    tb = {(r["concept"], r["method"], r["budget"]): r for r in rec_b}
    out = []
    for key in (k for k in ta if k in tb and k[1] in methods):
        a, b = ta[key], tb[key]
        rec = {"concept": key[0], "method": key[1], "budget": key[2], "a": a, "b": b}
        if "scores" in a and "scores" in b:
            if len(a["scores"]) != len(b["scores"]):
                raise ValueError(f"{key}: the runs scored {len(a['scores'])} and {len(b['scores'])} test prompts; "
                                 "compare runs with the same --n-test, concepts and seed")
            rec["diff"], rec["lo"], rec["hi"] = paired_diff_ci(b["scores"], a["scores"])
        out.append(rec)
    return out


def compare_lines(result_a, result_b, labels: tuple[str, str] = ("first SAEs", "second SAEs"),
                  budget: float | None = None) -> list[str]:
    """Markdown lines comparing the sparse methods of two runs at ``budget`` (default: the middle budget)."""
    budgets = result_a.budgets
    if tuple(budgets) != tuple(result_b.budgets):
        raise ValueError(f"the runs have different budgets ({budgets} and {result_b.budgets}): compare like with like")
    b = budgets[len(budgets) // 2] if budget is None else budget
    fl = result_a.settings.get("fluency", "perplexity")
    la, lb = labels
    rec_a, rec_b = table(result_a), table(result_b)  # each table bootstraps every record: made once
    rows = [r for r in paired_rows(result_a, result_b, records=(rec_a, rec_b)) if r["budget"] == b]
    lines = [f"## The sparse methods on two SAE sets, at {_budget_text(fl, b)}", "",
             f"Test scores with 95% intervals (chosen layer, strength) on {la} and on {lb}; the difference is "
             f"{lb} minus {la}, paired over the same test prompts and sampling seeds.", "",
             f"| concept | method | {la} | {lb} | difference [95%] |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        d = f"{r['diff']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]" if "diff" in r else ""
        lines.append(f"| {r['concept']} | {r['method']} | {_score(r['a'])} | {_score(r['b'])} | {d} |")
    up = sum(1 for r in rows if "diff" in r and r["lo"] > 0)
    down = sum(1 for r in rows if "diff" in r and r["hi"] < 0)
    both = sum(1 for r in rows if "diff" in r)
    lines += ["", f"Of {both} concept-method pairs reached on both sets, {up} score higher on {lb} (interval above "
              f"0) and {down} lower.", "", "Against CAA (win/tie/loss/underpowered/unreached over concepts):", "",
              f"| method | {la} | {lb} |", "| --- | --- | --- |"]
    ca, cb = counts(rec_a, "caa"), counts(rec_b, "caa")

    def cell(c):
        return "" if c is None else "/".join(str(c[k]) for k in ("win", "tie", "loss", "underpowered", "unreached"))
    for m in SPARSE:
        if (m, b) in ca or (m, b) in cb:
            lines.append(f"| {m} | {cell(ca.get((m, b)))} | {cell(cb.get((m, b)))} |")
    present = [m for m in SPARSE if (m, b) in ca and (m, b) in cb]
    if present:
        best_a = best_sparse(result_a, rec_a, tuple(present))
        best_b = best_sparse(result_b, rec_b, tuple(present))
        lines += ["", f"The best sparse method per concept (picked on the tuning split): {la}: {_tally(best_a, b)}; "
                  f"{lb}: {_tally(best_b, b)}."]
    return lines + [""]
