"""The full A/B sweep: 7 behaviours x layers 2..16 step 2 x multipliers -2..2, in bfloat16,
against float32 on the same behaviours in the same run.

    python -m benchmarks.sweep                                  # bf16 full sweep, then float32 on what it finished
    python -m benchmarks.sweep --float32 none                   # the bf16 sweep alone
    python -m benchmarks.sweep --behaviors coordinate-other-ais,refusal
    python -m benchmarks.sweep --bf16-from-files "LOAD NOTE"    # a stopped bf16 run's finished behaviours

Each dtype's model loads in turn (one real model in memory at a time). The sweep is ``sas.runs.sweep.ab_sweep``
as a user runs it: CAA vectors for all 8 layers from one pass over each behaviour's letter-balanced generate
split, the unsteered (multiplier 0) row scored once per behaviour and reused for every layer, every test
question. The float32 rerun gives (a) the float32/bfloat16 time ratio on the same behaviours and (b) the accuracy
check: bf16 p_match against float32 p_match, row by row. When only some behaviours ran, the whole sweep is
extrapolated from them (vector building in proportion to tokens, scoring per behaviour) and labelled
``estimated``. The load average is sampled every 30 s: the machine is shared.

Writes ``benchmarks/sweep_results.json`` and ``.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

import torch

from sas.files import write_text

from .harness import CACHE, ROOT, environment, load_average

TODAY_CPU_SECONDS = 1716.1  # the float32 estimate in benchmarks/results.json (sweep_estimate.py, 2026-11-22)


class LoadSampler:
    """Samples the 1-minute load average every ``every`` seconds in a daemon thread."""

    def __init__(self, every: float = 30.0):
        self.samples, self._stop = [], threading.Event()
        self._t = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every):
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def summary(self) -> dict:
        s = self.samples or [os.getloadavg()[0]]
        return {"min": round(min(s), 2), "mean": round(sum(s) / len(s), 2), "max": round(max(s), 2), "n": len(s)}


class _Ctx:
    def __init__(self, model):
        self.model = model


def per_behavior(marks: list[dict]) -> dict[str, dict]:
    """Wall/CPU seconds per finished behaviour from ``run_sweep``'s marks: building its vectors (``caa_start`` to
    ``caa_end``) and scoring its 40 rows (``caa_end`` to the next mark). A behaviour whose scoring was cut short
    (no next mark) is left out."""
    out = {}
    for i, m in enumerate(marks):
        if m["event"] != "caa_start" or i + 2 >= len(marks) or marks[i + 1]["event"] != "caa_end":
            continue
        end, nxt = marks[i + 1], marks[i + 2]
        out[m["behavior"]] = {"extraction_seconds": end["wall"] - m["wall"],
                              "extraction_cpu_seconds": end["cpu"] - m["cpu"],
                              "scoring_seconds": nxt["wall"] - end["wall"], "scoring_cpu_seconds": nxt["cpu"] - end["cpu"]}
    return out


def from_files(tag: str, dtype: str, load_note: str) -> dict:
    """The result of a sweep that was stopped: its finished behaviours, from the rows and marks it left."""
    out = CACHE / f"sweep_full{tag}.jsonl"
    marks = [json.loads(x) for x in out.with_suffix(".progress.jsonl").read_text().splitlines() if x.strip()]
    pb = per_behavior(marks)
    rows = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    rows = [{k: r[k] for k in ("behavior", "layer", "multiplier", "p_match", "n", "seconds")} for r in rows
            if r["behavior"] in pb]
    return {"dtype": dtype, "interrupted": True, "behaviors": sorted(pb), "rows": rows, "marks": marks,
            "per_behavior": pb, "layers": list(range(2, 17, 2)), "multipliers": [-2.0, -1.0, 0.0, 1.0, 2.0],
            "n_rows": len(rows), "load_average_1min": {"note": load_note}}


def sweep(dtype: str, behaviors, tag: str) -> dict:
    from sas import load_model
    from sas.forward.run import fast_layout

    from .cases import run_sweep

    t0 = time.perf_counter()
    model = load_model("gemma-3-270m", dtype=dtype, device="cpu")
    fast_layout(model)
    load_s = time.perf_counter() - t0
    with LoadSampler() as load:
        res = run_sweep(_Ctx(model), False, CACHE, behaviors=behaviors, tag=tag)
    res.update(dtype=dtype, model_load_seconds=load_s, load_average_1min=load.summary())
    res["per_behavior"] = per_behavior(res["marks"])
    del model
    gc.collect()
    return res


def compare(bf: dict, fp: dict) -> dict:
    """bf16 against float32 on the behaviours both ran: time ratios, and p_match row by row."""
    key = lambda r: (r["behavior"], r["layer"], r["multiplier"])  # noqa: E731
    fp_rows = {key(r): r for r in fp["rows"]}
    diffs = [abs(r["p_match"] - fp_rows[key(r)]["p_match"]) for r in bf["rows"] if key(r) in fp_rows]
    common = sorted(set(fp["per_behavior"]) & set(bf["per_behavior"]))
    tot = lambda res, k: sum(res["per_behavior"][b][k] for b in common)  # noqa: E731
    ratio = lambda k: tot(fp, k) / tot(bf, k)  # noqa: E731
    return {"behaviors": common, "rows_compared": len(diffs), "max_abs_p_match_difference": max(diffs),
            "mean_abs_p_match_difference": sum(diffs) / len(diffs),
            "rows_within_0.005": sum(d <= 0.005 for d in diffs),
            "float32_over_bfloat16": {k: ratio(k) for k in ("extraction_seconds", "extraction_cpu_seconds",
                                                            "scoring_seconds", "scoring_cpu_seconds")}}


def extrapolate(res: dict, all_behaviors) -> dict:
    """The whole sweep from a measured subset: vector building per token of each behaviour's letter-balanced
    generate split, scoring per behaviour (every behaviour scores 50 questions x 33 distinct conditions)."""
    from .sweep_estimate import behavior_tokens

    tokens = behavior_tokens()
    done, pb = sorted(res["per_behavior"]), res["per_behavior"]
    out = {"estimated": True, "from_behaviors": done, "share_of_tokens_measured":
           sum(tokens[b] for b in done) / sum(tokens[b] for b in all_behaviors)}
    for kind in ("", "_cpu"):
        per_tok = sum(pb[b][f"extraction{kind}_seconds"] for b in done) / sum(tokens[b] for b in done)
        per_beh = sum(pb[b][f"scoring{kind}_seconds"] for b in done) / len(done)
        ext, sc = per_tok * sum(tokens[b] for b in all_behaviors), per_beh * len(all_behaviors)
        out.update({f"extraction{kind}_seconds": ext, f"scoring{kind}_seconds": sc, f"total{kind}_seconds": ext + sc})
    return out


def _load(la: dict) -> str:
    return la["note"] if "note" in la else f"{la['min']}-{la['max']} (mean {la['mean']}, {la['n']} samples)"


def markdown(res: dict) -> str:
    bf, e16 = res["bfloat16"], res["bfloat16_extrapolated"]
    env = res["environment"]
    lines = ["# The full A/B sweep", "",
             f"`{res['command']}` at {env['date_utc']} UTC, commit {env['git_commit']}, torch threads "
             f"{env['torch_threads']}, 2 cores shared with three other engineers' jobs.", "",
             f"`sas.runs.sweep.ab_sweep`: 7 behaviours x layers {bf['layers']} x multipliers {bf['multipliers']}, "
             "280 rows, every test question; CAA vectors for all 8 layers from one pass over each behaviour's "
             "letter-balanced generate split, multiplier 0 scored once per behaviour and reused for every layer.", "",
             "| run | behaviours measured | wall | CPU | building vectors (CPU) | scoring (CPU) | load average |",
             "|---|---|---|---|---|---|---|"]
    for name, r, e in (("bfloat16", bf, e16), ("float32", res.get("float32_subset"), res.get("float32_extrapolated"))):
        if r is None:
            continue
        lines.append(f"| {name}, full sweep **estimated** from the measured behaviours "
                     f"({e['share_of_tokens_measured']:.0%} of the tokens) | {', '.join(e['from_behaviors'])} | "
                     f"{e['total_seconds'] / 60:.1f} min | {e['total_cpu_seconds'] / 60:.1f} min | "
                     f"{e['extraction_cpu_seconds'] / 60:.1f} min | {e['scoring_cpu_seconds'] / 60:.1f} min | "
                     f"{_load(r['load_average_1min'])} |")
    lines.append(f"| float32, the issue's estimate (results.json, 2026-11-22) | 5 of 7 | | {TODAY_CPU_SECONDS / 60:.1f} "
                 "min | | | about 6.5 |")
    best = min((x for x in (e16, res.get("float32_extrapolated")) if x), key=lambda x: x["total_cpu_seconds"])
    lines += ["", f"Goal (under 15 min): {'met' if best['total_cpu_seconds'] <= 900 else 'missed'}. The faster dtype "
              f"here takes an estimated {best['total_cpu_seconds'] / 60:.1f} CPU min (this process's CPU time, which "
              f"other jobs on the same cores inflate too) and {best['total_seconds'] / 60:.1f} min wall on this loaded "
              f"machine. bfloat16 against the issue's 28.6 CPU-min: {TODAY_CPU_SECONDS / e16['total_cpu_seconds']:.2f}x "
              "(> 1: faster)."]
    if res.get("compare"):
        c = res["compare"]
        r = c["float32_over_bfloat16"]
        lines += ["", f"bfloat16 against float32 on {', '.join(c['behaviors'])} ({c['rows_compared']} rows): float32 "
                  f"takes {r['extraction_cpu_seconds']:.2f}x the CPU time of bfloat16 to build the vectors "
                  f"({r['extraction_seconds']:.2f}x wall) and {r['scoring_cpu_seconds']:.2f}x to score "
                  f"({r['scoring_seconds']:.2f}x wall); p_match differs by at most {c['max_abs_p_match_difference']:.4f} "
                  f"(mean {c['mean_abs_p_match_difference']:.4f}; {c['rows_within_0.005']}/{c['rows_compared']} rows "
                  "within 0.005)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--behaviors", default="all", help="comma-separated behaviours for the bf16 sweep (default all)")
    ap.add_argument("--float32", default="same",
                    help="behaviours to rerun in float32 for the ratio and the accuracy check ('same': those the "
                         "bf16 sweep finished; 'none': skip)")
    ap.add_argument("--bf16-from-files", metavar="LOAD_NOTE", default=None,
                    help="do not rerun bf16: take the finished behaviours of a stopped bf16 run from "
                         "benchmarks/.cache/sweep_full_bf16.*; LOAD_NOTE records the load average seen during it")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "sweep_results.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from sas.load.data import BEHAVIORS

    out = Path(args.out)
    res = {"command": " ".join(["python -m benchmarks.sweep"] + (argv if argv is not None else sys.argv[1:])),
           "environment": environment(torch.get_num_threads()), "load_average_start": load_average()}
    behaviors = "all" if args.behaviors == "all" else args.behaviors.split(",")
    if args.bf16_from_files:
        res["bfloat16"] = from_files("_bf16", "bfloat16", args.bf16_from_files)
    else:
        res["bfloat16"] = sweep("bfloat16", behaviors, "_bf16")
    res["bfloat16_extrapolated"] = extrapolate(res["bfloat16"], BEHAVIORS)
    write_text(out, json.dumps(res, indent=1))  # an interrupted float32 run keeps the bf16 result
    if args.float32 != "none":
        fp = sorted(res["bfloat16"]["per_behavior"]) if args.float32 == "same" else args.float32.split(",")
        res["float32_subset"] = sweep("float32", fp, "_fp32")
        out.write_text(json.dumps(res, indent=1))
        res["compare"] = compare(res["bfloat16"], res["float32_subset"])
        res["float32_extrapolated"] = extrapolate(res["float32_subset"], BEHAVIORS)
    res["load_average_end"] = load_average()
    out.write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
