"""The report of ``sas compose``: per pair and setup, each concept together against alone, the fluency cost and the
overlap of the two vectors; per setup, the share of the alone effects kept together; sparse against dense.

``write_report(result, path)`` writes the Markdown; the numbers come from :mod:`sas.runs.compose`.
"""

from __future__ import annotations

from pathlib import Path

from ..files import write_text
from ..runs.compose import composition_table, mean_change, retained, sparse_vs_dense


def _ci(v, lo, hi, fmt="{:+.3f}") -> str:
    return f"{fmt.format(v)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def _overlap(o: dict | None) -> str:
    if not o:
        return ""
    text = f"cos {o['cosine']:+.2f}"
    if o.get("n_shared") is not None:
        top = ", ".join(map(str, o["shared_features"][:3]))
        text += (f"; {o['n_shared']} shared of {o['n_a']}/{o['n_b']} features ({o['same_sign']} same sign), "
                 f"{o['shared_weight_a']:.0%}/{o['shared_weight_b']:.0%} of the weight" + (f" (top: {top})" if top
                                                                                          else ""))
    elif o["layers"] == "different":
        text += "; layers do not overlap"
    return text


def pair_lines(records: list[dict]) -> list[str]:
    """The per-pair table: one line per pair and setup."""
    lines = ["| pair | setup | kind | A alone → together (Δ, 95% CI) | B alone → together (Δ, 95% CI) | "
             "ppl together / unsteered | together / A alone | together / B alone | overlap |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if "why" in r:
            lines.append(f"| {r['pair']} | {r['setup']} | {r['kind']} | {r['why']} | | | | | |")
            continue
        cells = [f"{r[x + '_alone']:.3f} → {r[x + '_together']:.3f} "
                 f"({_ci(r[x + '_diff'], r[x + '_diff_lo'], r[x + '_diff_hi'])})" for x in "ab"]
        ppl = [_ci(r[k], r[f"{k}_lo"], r[f"{k}_hi"], "{:.2f}") for k in ("ppl_together", "ppl_vs_a", "ppl_vs_b")]
        lines.append(f"| {r['pair']} | {r['setup']} | {r['kind']} | {cells[0]} | {cells[1]} | "
                     f"{' | '.join(ppl)} | {_overlap(r.get('overlap'))} |")
    return lines


def summary_lines(result, records: list[dict]) -> list[str]:
    """Per setup: pairs run, the share of the alone effects kept together, mean fluency; then sparse vs dense."""
    lines = ["| setup | kind | layers | pairs | A: together − alone, mean (95% CI) | B: together − alone | "
             "share of the alone effects kept together (95% CI) | mean ppl ratio together | "
             "pairs within the budget together |", "|---|---|---|---|---|---|---|---|---|"]
    for s in result.setups:
        recs = [r for r in records if r["setup"] == s.name and "why" not in r]
        if not recs:
            lines.append(f"| {s.name} | | | 0 | | | | | |")
            continue
        share = retained(result, s)
        within = sum(r["ppl_together"] <= result.settings["budget"] for r in recs)
        lines.append(f"| {s.name} | {recs[0]['kind']} | {recs[0]['layers']} | {len(recs)} | "
                     f"{_ci(*mean_change(result, s, 'a'))} | {_ci(*mean_change(result, s, 'b'))} | "
                     f"{_ci(*share, '{:.2f}')} | {sum(r['ppl_together'] for r in recs) / len(recs):.2f} | "
                     f"{within}/{len(recs)} |")
    comp = sparse_vs_dense(result)
    if comp:
        lines += ["", "| sparse setup | dense setup | share kept: sparse − dense (95% CI) |", "|---|---|---|"]
        lines += [f"| {c['sparse']} | {c['dense']} | {_ci(c['diff'], c['lo'], c['hi'], '{:+.2f}')} |" for c in comp]
    return lines


def write_report(result, path) -> Path:
    """Write the Markdown report of a :class:`~sas.runs.compose.ComposeResult` to ``path``; returns it."""
    st = result.settings
    records = composition_table(result)
    saes = ", ".join(f"L{x}: {n}" for x, n in sorted(st.get("saes", {}).items())) or "none"
    lines = [f"# Composition of steering vectors ({st['model']}, {st['dtype']})", "",
             f"Strengths chosen per concept, method and layer on the tuning split (n={st.get('n_tune')}) at the "
             f"perplexity budget {st['budget']:g}x; {st['n_test']} test prompts shared by every condition, "
             f"{st['max_new_tokens']} new tokens, seed {st['seed']}. SAEs: {saes}.", "",
             "## Per setup", "", *summary_lines(result, records), "", "## Per pair", "",
             "Scores are each concept's own score (VADER compound for sentiment, the share of continuations that "
             "mention the topic for topics); Δ = together − alone, paired by prompt.", "", *pair_lines(records), ""]
    return write_text(path, "\n".join(lines))
