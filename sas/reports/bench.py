"""The report of ``sas bench``: which method steers each concept best at each fluency budget, with intervals.

``write_report(result, folder)`` writes ``report.md``, ``summary.png`` (test scores at each budget, a row per
concept, a marker per method, 95% intervals) and ``frontiers.png`` (per concept, concept score against the
perplexity ratio on the tuning split, a line per method and layer, points in order of strength, interval bands).
"""

from __future__ import annotations

import zlib
from pathlib import Path

from ..evaluation.stats import detectable_difference, paired_diff_ci, verdict
from ..files import write_text
from .plots import figure, save_figure

COLORS = {"caa": "tab:blue", "actadd": "tab:orange", "sas": "tab:red", "sas_dense": "tab:purple",
          "prompt": "tab:green", "sas_diff": "tab:brown", "sas_os": "tab:pink", "sas_clamp": "tab:olive",
          "sae_ts": "tab:cyan", "sae_ts_pinv": "black", "sas_dtc": "tab:gray", "sas_relu": "darkred"}
OTHER_COLORS = ("gold", "navy", "teal", "magenta", "lime", "salmon", "indigo", "darkgoldenrod")
# the methods that pick SAE features; SAS-dense is the dense control of the paper's SAS vector
SPARSE = ("sas", "sas_diff", "sas_os", "sas_clamp", "sae_ts", "sae_ts_pinv", "sas_dtc", "sas_relu")


def _color(method: str) -> str:
    """One colour per method in every figure (a method of one's own gets a colour from its name)."""
    return COLORS.get(method) or OTHER_COLORS[zlib.crc32(method.encode()) % len(OTHER_COLORS)]


def _test_row(result, choice):
    for r in result.test:
        if (r["concept"], r["method"], int(r["layer"]), float(r["multiplier"])) == \
                (choice.concept, choice.method, choice.layer, choice.strength) and "skipped" not in r:
            return r
    return None


def _unsteered(result) -> dict:
    return {r["concept"]: r for r in result.test if float(r["multiplier"]) == 0 and "skipped" not in r}


def margins(result) -> dict[str, float]:
    """Per concept, the smallest paired difference its test split can detect
    (:func:`~sas.evaluation.stats.detectable_difference`), from the paired differences of every tested steered
    condition from the unsteered model, pooled over conditions (their variances averaged)."""
    unst = _unsteered(result)
    out = {}
    for concept, u in unst.items():
        rows = [r for r in result.test if r["concept"] == concept and float(r["multiplier"]) != 0
                and "skipped" not in r and len(r["scores"]) == len(u["scores"])]
        if not rows or len(u["scores"]) < 2:
            continue
        mdes = [detectable_difference([a - b for a, b in zip(r["scores"], u["scores"])]) for r in rows]
        out[concept] = float(sum(m * m for m in mdes) / len(mdes)) ** 0.5  # the same n: pooling variances
    return out


def _fluency_values(row: dict, u: dict | None) -> dict:
    """Every fluency measure a row has, as the budgets read them (ratios to unsteered, KL in nats)."""
    from ..evaluation.fluency import MEASURES

    out = {}
    for name, m in MEASURES.items():
        if row.get(m.key) is not None and u is not None and (not m.ratio or u.get(m.key)):
            out[name] = row[m.key] / u[m.key] if m.ratio else row[m.key]
    return out


def table(result) -> list[dict]:
    """One record per concept, method and budget: the chosen layer and strength, the tuning and test scores with
    intervals (the 0/1 share and the continuous score), the test values of every fluency measure, and the paired
    difference from CAA and from prompting with verdicts (``tie`` only within the concept's detectable margin,
    else ``underpowered``: :func:`margins`)."""
    unsteered = _unsteered(result)
    margin = margins(result)
    fluency = result.settings.get("fluency", "perplexity")
    rows = {}
    for c in result.choices:
        rec = {"concept": c.concept, "method": c.method, "budget": c.budget, "layer": c.layer,
               "strength": c.strength, "reached": c.reached, "why": c.why, "edge": c.edge,
               "tuning_score": c.tuning_score}
        r = _test_row(result, c) if c.reached else None
        if r is not None:
            u = unsteered.get(c.concept)
            fl = _fluency_values(r, u)
            rec.update(score=r["score"], lo=r["score_lo"], hi=r["score_hi"], n=r["n"], scores=r["scores"],
                       ppl_ratio=fl.get("perplexity"), fluency=fl, fluency_value=fl.get(fluency),
                       distinct2=r["distinct2"], raw_multiplier=r.get("raw_multiplier"),
                       n_features=r.get("n_features"))
            if "continuous" in r:
                rec.update(cont=r["continuous"], cont_lo=r["continuous_lo"], cont_hi=r["continuous_hi"])
        rows[(c.concept, c.method, c.budget)] = rec
    for (concept, method, b), rec in rows.items():
        for base in ("caa", "prompt"):
            other = rows.get((concept, base, b))
            if method == base or other is None or "scores" not in rec or "scores" not in other:
                continue
            d, lo, hi = paired_diff_ci(rec["scores"], other["scores"])
            rec[f"vs_{base}"], rec[f"vs_{base}_lo"], rec[f"vs_{base}_hi"] = d, lo, hi
            rec[f"vs_{base}_verdict"] = verdict(lo, hi, margin.get(concept))
    return list(rows.values())


def _cell(rec: dict | None) -> str:
    if rec is None:
        return ""
    if "score" not in rec:
        return "not reached"
    mark = {"win": " ▲", "loss": " ▼", "underpowered": " ?"}.get(rec.get("vs_caa_verdict"), "")
    where = "" if rec["method"] == "prompt" else f" (L{rec['layer']}, {rec['strength']:g}{' †' if rec['edge'] else ''})"
    cont = f"; {rec['cont']:.3f} [{rec['cont_lo']:.3f}, {rec['cont_hi']:.3f}]" if "cont" in rec else ""
    return f"{rec['score']:.2f} [{rec['lo']:.2f}, {rec['hi']:.2f}]{cont}{mark}{where}"


def counts(records: list[dict], base: str) -> dict[tuple[str, float], dict[str, int]]:
    """Win/tie/loss/underpowered counts of every method against ``base`` ("caa" or "prompt"), per budget; a
    concept where one of the two did not reach the budget counts as ``unreached``."""
    out = {}
    by = {(r["concept"], r["method"], r["budget"]): r for r in records}
    for r in records:
        if r["method"] == base:
            continue
        c = out.setdefault((r["method"], r["budget"]), {"win": 0, "tie": 0, "loss": 0, "underpowered": 0,
                                                         "unreached": 0})
        other = by.get((r["concept"], base, r["budget"]))
        if f"vs_{base}_verdict" in r:
            c[r[f"vs_{base}_verdict"]] += 1
        elif other is not None:
            c["unreached"] += 1
    return out


def best_sparse(result, records: list[dict], sparse=SPARSE) -> list[dict]:
    """Per concept and budget, the sparse method with the best *tuning* score within the budget (so picking the
    best of several methods uses no test data), its test score, and paired differences from CAA, from the paper's
    SAS and from the unsteered model. A concept no sparse method reached has ``method`` None."""
    by = {(r["concept"], r["method"], r["budget"]): r for r in records}
    unsteered = _unsteered(result)
    margin = margins(result)
    out = []
    for concept in dict.fromkeys(r["concept"] for r in records):
        for b in result.budgets:
            cands = [c for c in result.choices if c.concept == concept and c.budget == b and c.method in sparse
                     and c.reached and "scores" in by.get((concept, c.method, b), {})]
            rec = {"concept": concept, "budget": b, "method": None}
            if cands:
                c = max(cands, key=lambda c: (c.tuning_score, -sparse.index(c.method)))
                rec = dict(by[(concept, c.method, b)])
                for base, other in (("caa", by.get((concept, "caa", b))), ("sas", by.get((concept, "sas", b))),
                                    ("unsteered", unsteered.get(concept))):
                    if other is None or "scores" not in other:
                        continue
                    d, lo, hi = paired_diff_ci(rec["scores"], other["scores"])
                    rec[f"vs_{base}"], rec[f"vs_{base}_lo"], rec[f"vs_{base}_hi"] = d, lo, hi
                    rec[f"vs_{base}_verdict"] = verdict(lo, hi, margin.get(concept))
            out.append(rec)
    return out


def _features_link(r: dict) -> str:
    """The vector's feature count linked to its page in features/ (written by :func:`write_features`), for a
    vector of SAE features; "" for a dense one."""
    if not r.get("n_features") or r["method"] in ("sas_dense", "sae_ts", "sae_ts_pinv"):
        return ""
    return f"[{r['n_features']}](features/{r['concept']}_{r['method']}_L{r['layer']}.md)"


def _best_sparse_lines(result, records: list[dict], sparse=SPARSE) -> list[str]:
    present = [m for m in sparse if any(r["method"] == m for r in records)]
    if len(present) < 2:
        return []
    best = best_sparse(result, records, tuple(present))
    fl = result.settings.get("fluency", "perplexity")
    lines = ["## The best sparse method (picked per concept on the tuning split)", "",
             f"Among {', '.join(present)}: per concept and budget, the method with the best tuning score within "
             "the budget; its test score and the paired differences (test split) from CAA, from the paper's SAS and "
             "from the unsteered model. 'features' links to what the vector is made of (features.md).", "",
             "| budget | concept | method (layer, strength) | test score | vs CAA | vs SAS | vs unsteered | features |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def diff(r, base):
        if f"vs_{base}" not in r:
            return ""
        mark = {"win": " ▲", "loss": " ▼", "underpowered": " ?"}.get(r[f"vs_{base}_verdict"], "")
        return f"{r[f'vs_{base}']:+.2f} [{r[f'vs_{base}_lo']:+.2f}, {r[f'vs_{base}_hi']:+.2f}]{mark}"

    for b in result.budgets:
        for r in (r for r in best if r["budget"] == b):
            if r["method"] is None:
                lines.append(f"| {_budget_text(fl, b)} | {r['concept']} | not reached | | | | | |")
                continue
            link = _features_link(r) or "dense"
            lines.append(f"| {_budget_text(fl, b)} | {r['concept']} | {r['method']} (L{r['layer']}, {r['strength']:g}) | "
                         f"{r['score']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}] | {diff(r, 'caa')} | {diff(r, 'sas')} | "
                         f"{diff(r, 'unsteered')} | {link} |")
    lines.append("")
    others = tuple(m for m in present if m != "sas")
    without = best_sparse(result, records, others) if "sas" in present and others else []
    for b in result.budgets:
        lines.append(f"- {_budget_text(fl, b)}: {_tally(best, b)}" + (f"; without the paper's SAS in the pool ({', '.join(others)}):"
                                                       f" {_tally(without, b)}" if without else "") + ".")
    lines.append("")
    return lines


def _tally(best: list[dict], budget: float) -> str:
    """The best sparse method's verdicts against CAA over the concepts at ``budget``, and its wins over SAS."""
    rs = [r for r in best if r["budget"] == budget]
    v = [r.get("vs_caa_verdict") for r in rs]
    above_sas = sum(r.get("vs_sas_verdict") == "win" for r in rs)
    return (f"against CAA better on {v.count('win')} of {len(rs)} concepts, tied on {v.count('tie')}, worse on "
            f"{v.count('loss')}, underpowered on {v.count('underpowered')} (the interval includes 0 but also "
            f"differences the test split cannot rule out), not compared on {v.count(None)} "
            f"(one side reached no strength within the budget); better than the paper's SAS (interval above 0) on "
            f"{above_sas} of {len(rs)}")


def score_tables(result, records: list[dict] | None = None) -> list[str]:
    """Markdown lines: per fluency budget, a table of each concept's test score per method with its 95% interval
    (the report's main tables; ``sas bench`` prints them at the end)."""
    records = table(result) if records is None else records
    methods = list(dict.fromkeys(r["method"] for r in records))
    concepts = list(dict.fromkeys(r["concept"] for r in records))
    fluency = result.settings.get("fluency", "perplexity")
    unst = _unsteered(result)
    lines = []
    for b in result.budgets:
        lines += [f"## Fluency budget: {fluency} {_budget_text(fluency, b)}", "",
                  "| concept | unsteered | " + " | ".join(methods) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in methods) + " |"]
        by = {(r["concept"], r["method"]): r for r in records if r["budget"] == b}
        for c in concepts:
            u = unst.get(c)
            us = f"{u['score']:.2f} [{u['score_lo']:.2f}, {u['score_hi']:.2f}]" if u else ""
            lines.append(f"| {c} | {us} | " + " | ".join(_cell(by.get((c, m))) for m in methods) + " |")
        lines.append("")
    return lines


def write_report(result, folder) -> Path:
    """Write ``report.md``, ``summary.png`` and ``frontiers.png`` to ``folder``; returns the report's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = table(result)
    methods = list(dict.fromkeys(r["method"] for r in records))
    concepts = list(dict.fromkeys(r["concept"] for r in records))
    s = result.settings
    fluency = s.get("fluency", "perplexity")
    lines = ["# sas bench", "",
             f"Model {s.get('model')} ({s.get('dtype')}); concepts: {len(concepts)}; methods: {', '.join(methods)}; "
             f"layers {s.get('layers')}; strengths (edit norm / mean residual norm) {s.get('strengths')}; "
             f"{s.get('n_tune')} tuning and {s.get('n_test')} test prompts per concept; "
             f"{s.get('max_new_tokens')} sampled tokens (top-k 50, prompt i with seed {s.get('seed')} + i); "
             f"repetition guard: distinct-2 at least {s.get('distinct_guard')} x unsteered. Fluency budget: "
             f"{_measure_text(fluency)}.", "",
             "Each cell: the test-split concept score (the share of continuations on the concept, or the scorer's "
             "own mean) at the strength and layer chosen on the tuning split (the best score within the budget), "
             "with its bootstrap 95% interval (2,000 resamples of the test prompts), then the continuous score "
             "(the lexicon's rate per word, VADER's compound, the language identifier's probability) with its "
             "interval; ▲/▼: the paired bootstrap interval of the difference from CAA (same prompts, same sampling "
             "seeds) lies above/below 0; ?: underpowered (the interval straddles 0 but reaches beyond the smallest "
             "difference the concept's test split can detect, so 'tie' would overclaim); †: the choice is the "
             "largest or smallest strength tried at its layer. 'not reached': no strength met the budget on the "
             "tuning split.", ""]
    lines += score_tables(result, records)
    unst = _unsteered(result)
    for base, title in (("caa", "CAA"), ("prompt", "prompting")):
        cnt = counts(records, base)
        if not cnt:
            continue
        lines += [f"## Against {title} (paired bootstrap, win/tie/loss/underpowered/unreached over concepts)", "",
                  "| method | " + " | ".join(_budget_text(fluency, b) for b in result.budgets) + " |",
                  "| --- | " + " | ".join("---" for _ in result.budgets) + " |"]
        for m in methods:
            if m == base:
                continue
            cells = [cnt.get((m, b), {}) for b in result.budgets]
            lines.append(f"| {m} | " + " | ".join(f"{c.get('win', 0)}/{c.get('tie', 0)}/{c.get('loss', 0)}/"
                                                 f"{c.get('underpowered', 0)}/{c.get('unreached', 0)}"
                                                 for c in cells) + " |")
        lines.append("")
    lines += _power_lines(result, records)
    lines += _unmoved_lines(result, records)
    lines += _tuning_test_lines(result, records, fluency)
    lines += time_lines(result.tuning + result.test)
    lines += _best_sparse_lines(result, records)
    lines += ["## Differences from CAA (test split, paired)", "",
              "'features': for a vector of SAE features, how many it kept, linked to what they are (features.md).", "",
              f"| concept | method | budget | difference [95% interval] | verdict | test {fluency} | features |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        if "vs_caa" in r:
            fv = "" if r.get("fluency_value") is None else f"{r['fluency_value']:.2f}"
            lines.append(f"| {r['concept']} | {r['method']} | {_budget_text(fluency, r['budget'])} | {r['vs_caa']:+.2f} "
                         f"[{r['vs_caa_lo']:+.2f}, {r['vs_caa_hi']:+.2f}] | {r['vs_caa_verdict']} | {fv} | "
                         f"{_features_link(r)} |")
    lines.append("")
    unreached = [r for r in records if not r["reached"]]
    if unreached:
        lines += ["## Not reached", "", "| concept | method | budget | why |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['concept']} | {r['method']} | {_budget_text(fluency, r['budget'])} | {r['why']} |"
                  for r in unreached]
        lines.append("")
    if result.judged:
        lines += ["## LM judge (AxBench's prompts; harmonic mean of concept, instruction, fluency, 0-2)", "",
                  "| concept | method | layer | strength | judge [95% interval] | concept | instruction | fluency |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for j in result.judged:
            lines.append(f"| {j['concept']} | {j['method']} | {j['layer']} | {j['multiplier']:g} | {j['judge']:.2f} "
                         f"[{j['judge_lo']:.2f}, {j['judge_hi']:.2f}] | {j['judge_concept']:.2f} | "
                         f"{j['judge_instruction']:.2f} | {j['judge_fluency']:.2f} |")
        lines.append("")
    lines += ["![summary](summary.png)", "", "![frontiers](frontiers.png)", ""]
    plot_summary(records, result.budgets, unst, folder / "summary.png", fluency)
    plot_frontiers(result, folder / "frontiers.png")
    return write_text(folder / "report.md", "\n".join(lines))


def _measure_text(fluency: str) -> str:
    from ..evaluation.fluency import get_measure

    m = get_measure(fluency)
    return f"{fluency}, the {m.what}" + (" (a ratio to the unsteered model's)" if m.ratio else "")


def _budget_text(fluency: str, b: float) -> str:
    from ..evaluation.fluency import get_measure

    return f"{b:g}x" if get_measure(fluency).ratio else f"{b:g} nats"


def unmoved(result, records: list[dict]) -> list[dict]:
    """Per budget, the concepts no steering method moved on the test split (no paired interval from the unsteered
    model above 0; prompting does not count), each with what moving it would cost: the tuning condition of least
    fluency cost whose score interval lies above the unsteered tuning score (``None``: no condition tried did)."""
    from ..runs.bench import fluency_value

    fluency = result.settings.get("fluency", "perplexity")
    unst = _unsteered(result)
    tune_unst = {r["concept"]: r for r in result.tuning if float(r["multiplier"]) == 0 and "skipped" not in r}
    out = []
    for b in result.budgets:
        for concept in dict.fromkeys(r["concept"] for r in records):
            u = unst.get(concept)
            steered = [r for r in records if r["concept"] == concept and r["budget"] == b and r["method"] != "prompt"
                       and "scores" in r]
            if u is None or any(paired_diff_ci(r["scores"], u["scores"])[1] > 0 for r in steered):
                continue
            tu, cheapest = tune_unst.get(concept), None
            for r in result.tuning:
                if (tu is None or r["concept"] != concept or float(r["multiplier"]) == 0 or "skipped" in r
                        or r["method"] == "prompt" or not r["score_lo"] > tu["score"]):
                    continue
                try:
                    cost = fluency_value(r, tu, fluency)
                except ValueError:  # a row without the measure, or NaN: it cannot price the move
                    continue
                if cheapest is None or cost < cheapest[0]:
                    cheapest = (cost, r)
            rec = {"concept": concept, "budget": b, "unsteered": tu["score"] if tu else None, "cost": None}
            if cheapest is not None:
                cost, r = cheapest
                rec.update(cost=cost, method=r["method"], layer=int(r["layer"]), strength=float(r["multiplier"]),
                           score=r["score"], lo=r["score_lo"], hi=r["score_hi"])
            out.append(rec)
    return out


def _unmoved_lines(result, records: list[dict]) -> list[str]:
    rows = unmoved(result, records)
    if not rows:
        return []
    fluency = result.settings.get("fluency", "perplexity")
    lines = ["## Concepts no steering method moved within the budget, and what moving them costs", "",
             "Per budget, the concepts where no steered method's test score is above the unsteered model's (paired "
             "interval above 0), with the tuning condition of least fluency cost whose score interval lies above "
             f"the unsteered tuning score, and that cost ({fluency}). A cost far beyond every budget says the "
             "concept cannot be reached by steering here, or that the fluency measure charges the concept itself "
             "(the perplexity measure charges another language as disfluent: the documentation's fluency check "
             "gives each measure's agreement with reading).", "",
             "| budget | concept | cheapest move on the tuning split (method, layer, strength) | tuning score "
             "[95% interval] (unsteered) | its cost |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["cost"] is None:
            lines.append(f"| {_budget_text(fluency, r['budget'])} | {r['concept']} | no condition tried moved it | | |")
            continue
        lines.append(f"| {_budget_text(fluency, r['budget'])} | {r['concept']} | {r['method']} (L{r['layer']}, "
                     f"{r['strength']:g}) | {r['score']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}] ({r['unsteered']:.2f}) | "
                     f"{_budget_text(fluency, round(r['cost'], 2))} |")
    lines.append("")
    return lines


def _power_lines(result, records: list[dict]) -> list[str]:
    """Per concept: test prompts and the smallest paired difference they can detect."""
    margin = margins(result)
    unst = _unsteered(result)
    if not margin:
        return []
    lines = ["## Power: the smallest difference each concept's test split can detect", "",
             "Per concept: its test prompts, and the paired difference a two-sided 95% test finds with 80% "
             "probability (2.80 x the standard deviation of per-prompt differences / sqrt(n), pooled over the "
             "tested conditions). A difference from CAA whose interval straddles 0 counts as a tie only within "
             "this margin; beyond it, underpowered.", "",
             "| concept | test prompts | detectable difference | underpowered comparisons with CAA |",
             "| --- | --- | --- | --- |"]
    for c, m in margin.items():
        n_under = sum(r.get("vs_caa_verdict") == "underpowered" for r in records if r["concept"] == c)
        lines.append(f"| {c} | {len(unst[c]['scores'])} | {m:.3f} | {n_under} |")
    lines.append("")
    return lines


PHASES = {"vector": "building vectors", "generate": "generation", "perplexity": "perplexity (unsteered model)",
          "fluency_model": "fluency model", "kl": "KL budget", "scorer": "concept scorer"}


def time_lines(rows: list[dict]) -> list[str]:
    """Where the time went, per split and per method, from the rows' wall and CPU seconds and their phases."""
    rows = [r for r in rows if "skipped" not in r and r.get("seconds") is not None]
    if not rows:
        return []
    lines = ["## Where the time goes", "",
             "Summed over the rows of this report (rows an earlier run wrote into the same results file count too: "
             "they are read, not run again). CPU: this process's CPU time over every thread; the phases are wall "
             "time; 'other' is the wall time outside them (loading, strength calibration, bookkeeping).", "",
             "| split | rows | wall (h) | CPU (h) | " + " | ".join(PHASES.values()) + " | other |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in PHASES) + " | --- |"]

    def line(label, rs):
        wall = sum(r["seconds"] for r in rs)
        cpu = sum(r.get("cpu_seconds", 0.0) for r in rs)
        ph = {k: sum(r.get(f"seconds_{k}", 0.0) for r in rs) for k in PHASES}
        share = " | ".join(f"{v / 3600:.2f} ({v / wall:.0%})" if wall else "0" for v in ph.values())
        return (f"| {label} | {len(rs)} | {wall / 3600:.2f} | {cpu / 3600:.2f} | {share} | "
                f"{max(wall - sum(ph.values()), 0.0) / 3600:.2f} |")

    for split in dict.fromkeys(r.get("split", "") for r in rows):
        lines.append(line(split, [r for r in rows if r.get("split", "") == split]))
    lines.append(line("**all**", rows))
    lines += ["", "| method | rows | wall (h) | CPU (h) |", "| --- | --- | --- | --- |"]
    for m in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == m]
        lines.append(f"| {m} | {len(rs)} | {sum(r['seconds'] for r in rs) / 3600:.2f} | "
                     f"{sum(r.get('cpu_seconds', 0.0) for r in rs) / 3600:.2f} |")
    lines.append("")
    return lines


def _tuning_test_lines(result, records: list[dict], fluency: str) -> list[str]:
    """Each chosen condition's tuning and test scores side by side, how often a bootstrap of the tuning prompts
    makes the same choice, and every fluency measure on the test split."""
    from ..evaluation.fluency import MEASURES
    from ..runs.bench import DISTINCT_GUARD, choice_stability

    stable = choice_stability(result.tuning, result.choices, fluency,
                              result.settings.get("distinct_guard", DISTINCT_GUARD), n_boot=100)

    rs = [r for r in records if "score" in r and r["method"] != "prompt"]
    if not rs:
        return []
    names = [m for m in MEASURES if any(m in r.get("fluency", {}) for r in rs)]
    lines = ["## Tuning against test, per chosen condition", "",
             "The concept score on the tuning prompts (where the strength was chosen) beside the test score; a "
             "large drop means the tuning split chose on noise. 'stable': the share of 100 bootstrap resamples of "
             "the tuning prompts that choose the same layer and strength. Every fluency measure on the test split "
             "(perplexity and smollm2 as ratios to unsteered, kl in nats).", "",
             "| concept | method | budget | layer, strength | tuning | test | stable | " + " | ".join(names) + " |",
             "| --- | --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in names) + " |"]
    for r in rs:
        fl = " | ".join(f"{r['fluency'][m]:.2f}" if m in r["fluency"] else "" for m in names)
        lines.append(f"| {r['concept']} | {r['method']} | {_budget_text(fluency, r['budget'])} | L{r['layer']}, "
                     f"{r['strength']:g}{' †' if r['edge'] else ''} | {r['tuning_score']:.2f} | {r['score']:.2f} | "
                     f"{stable.get((r['concept'], r['method'], r['budget']), float('nan')):.0%} | {fl} |")
    lines.append("")
    return lines


def plot_summary(records: list[dict], budgets, unsteered: dict, path, fluency: str = "perplexity") -> Path:
    """A panel per budget: a row per concept, each method's test score with its 95% interval, unsteered in grey."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    concepts = list(dict.fromkeys(r["concept"] for r in records))
    fig, axes = figure(1, len(budgets), figsize=(4.2 * len(budgets), 0.45 * len(concepts) + 1.6), sharey=True)
    for ax, b in zip(axes[0], budgets):
        by = {(r["concept"], r["method"]): r for r in records if r["budget"] == b}
        for i, m in enumerate(methods):
            off = (i - (len(methods) - 1) / 2) * min(0.13, 0.8 / len(methods))  # all methods within a row
            for y, c in enumerate(concepts):
                r = by.get((c, m))
                if r is None or "score" not in r:
                    continue
                ax.errorbar(r["score"], y + off, xerr=[[r["score"] - r["lo"]], [r["hi"] - r["score"]]], fmt="o",
                            ms=4, color=_color(m), label=m, capsize=2)
        for y, c in enumerate(concepts):
            if c in unsteered:
                ax.plot(unsteered[c]["score"], y, "|", color="grey", ms=12)
        ax.set_yticks(range(len(concepts)))
        ax.set_yticklabels(concepts)
        ax.invert_yaxis()
        ax.set_title(f"{fluency} budget {_budget_text(fluency, b)}")
        ax.set_xlabel("concept score (test split)")
        ax.grid(axis="x", alpha=0.3)
    uniq = {}  # every method that has a point in any panel (one reached only at 2x too)
    for ax in axes[0]:
        handles, labels = ax.get_legend_handles_labels()
        uniq.update({lab: h for lab, h in zip(labels, handles) if lab not in uniq})
    uniq = {m: uniq[m] for m in methods if m in uniq}
    axes[0][-1].legend(list(uniq.values()), list(uniq.keys()), fontsize=7, loc="best")
    return save_figure(fig, path)


def plot_frontiers(result, path) -> Path:
    """Per concept: concept score against perplexity ratio (tuning split), a line per method and layer, points in
    order of strength from the unsteered point, bands of the score's 95% interval; budgets as dotted lines."""
    import math

    from matplotlib.ticker import NullFormatter, ScalarFormatter

    from ..evaluation.fluency import get_measure
    from ..runs.bench import fluency_value

    fluency = result.settings.get("fluency", "perplexity")
    ratio = get_measure(fluency).ratio
    concepts = list(dict.fromkeys(r["concept"] for r in result.tuning if r is not None))
    ncols = min(4, len(concepts))
    nrows = math.ceil(len(concepts) / ncols)
    fig, axes = figure(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows))
    for k, c in enumerate(concepts):
        ax = axes[k // ncols][k % ncols]
        rows = [r for r in result.tuning if r is not None and r["concept"] == c and "skipped" not in r]
        u = next((r for r in rows if float(r["multiplier"]) == 0), None)
        if u is None:
            continue
        lines = {}
        for r in rows:
            if float(r["multiplier"]) != 0:
                lines.setdefault((r["method"], int(r["layer"])), []).append(r)
        for (m, layer), rs in sorted(lines.items()):
            rs = [u] + sorted(rs, key=lambda r: float(r["multiplier"]))
            x = [fluency_value(r, u, fluency) for r in rs]
            style = "-" if layer == min(x for _, x in lines if x >= 0) or m == "prompt" else "--"
            label = m if m == "prompt" else f"{m} L{layer}"
            ax.plot(x, [r["score"] for r in rs], style, marker="o", ms=3, color=_color(m), label=label)
            ax.fill_between(x, [r["score_lo"] for r in rs], [r["score_hi"] for r in rs], color=_color(m),
                            alpha=0.12, linewidth=0)
        for b in result.budgets:
            ax.axvline(b, color="grey", ls=":", lw=0.8)
        if ratio:  # KL starts at 0 (unsteered): a linear axis
            ax.set_xscale("log")
            hi = max([fluency_value(r, u, fluency) for r in rows] + [max(result.budgets)])
            ticks = (1, *result.budgets, 3) if hi < 4 else (1, 2, 5, 10, 20, 50)  # budget labels crowd a wide axis
            ax.set_xticks([t for t in ticks if t <= hi * 1.05])
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(c)
        ax.set_xlabel(f"{fluency}{' / unsteered' if ratio else ' (nats)'} (tuning)")
        ax.set_ylabel("concept score")
        if k == 0:
            ax.legend(fontsize=6)
    for k in range(len(concepts), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    return save_figure(fig, path)


def write_features(result, folder, model, saes: dict | None = None, texts=None, n_features: int = 10,
                   max_tokens: int | None = 20_000) -> Path:
    """What each sparse vector of the benchmark is made of: for every concept, SAE-space method and layer, a
    :func:`sas.reports.features.report` (logit-lens tokens, output score, firing frequency on each side of the
    concept's pairs and over held-out text, top held-out contexts) in ``folder/features/``, indexed by
    ``folder/features.md`` with each vector's size and selection record. ``texts``: held-out text (default:
    :func:`sas.load.data.load_text_sample`), read once per SAE into its feature cache (the dashboards' cache,
    :func:`sas.activations.feature_cache.feature_cache`; ``max_tokens`` caps it: 20,000 tokens build in about a
    minute for a 16k SAE on a CPU, no more than the old pass of 8,000 tokens per vector took for four vectors;
    None: all of ``texts``, the dashboards' default). The vectors come from the results file's vector cache."""
    from ..evaluation.features import feature_cache
    from ..runs.inspect import sae_space_vectors
    from .features import report

    runner, built = sae_space_vectors(result, model, saes)
    model = model or runner.model
    folder = Path(folder)
    caches = {}  # layer -> the SAE's FeatureCache, built or read once

    def cache(layer: int):
        if layer not in caches:
            caches[layer] = feature_cache(model, runner.sae(layer), texts, max_tokens=max_tokens)
        return caches[layer]

    rows = []
    for concept, method, layer, vec in built:
        if isinstance(vec, Exception):
            rows.append(f"| {concept} | {method} | {layer} | 0 | {vec} | |")
            continue
        settings = dict(getattr(vec, "settings", None) or {})
        per_layer = settings.pop("per_layer", None) or {}
        skipped = settings.pop("skipped", None) or {}
        if layer not in vec.layers:
            why = skipped.get(layer, skipped.get(str(layer), "no vector at this layer"))
            rows.append(f"| {concept} | {method} | {layer} | 0 | {why} | |")
            continue
        info = per_layer.get(layer, per_layer.get(str(layer), {}))  # str keys after a JSON round trip
        selection = f"{_short(settings)}; {_short(info)}"
        if vec.kind == "dense":  # SAS-dense, SAE-TS: dense vectors made from SAE features
            rows.append(f"| {concept} | {method} | {layer} | dense | {selection} | |")
            continue
        name = f"{concept}_{method}_L{layer}.md"
        report(model, runner.sae(layer), vec, None, folder / "features" / name, layer=layer,
               n_features=n_features, contrast=runner.items[concept].contrast, cache=cache(layer))
        rows.append(f"| {concept} | {method} | {layer} | {len(vec.features(layer))} | {selection} | "
                    f"[features/{name}](features/{name}) |")
    held_out = ", ".join(f"{caches[layer].n_positions:,} tokens at layer {layer}" for layer in sorted(caches))
    lines = ["# What each sparse vector is made of", "",
             "Every vector of an SAE-space method the benchmark built (one per concept, method and layer; a "
             "vector that failed shows why). Each link: its top "
             f"{n_features} features by |value|, the tokens each promotes and suppresses (logit lens), its output "
             "score (Arad et al.), how often it fires on the positive and the negative texts of the concept and "
             f"over held-out Wikipedia ({held_out or 'none read'}), and its top held-out contexts.", "",
             "| concept | method | layer | features | selection | report |", "| --- | --- | --- | --- | --- | --- |",
             *rows]
    return write_text(folder / "features.md", "\n".join(lines) + "\n")


def _short(d: dict, limit: int = 160) -> str:
    s = ", ".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, (dict, list)) or len(str(v)) < 60)
    s = s.replace("|", "/")
    return (s[:limit] + "...") if len(s) > limit else s
