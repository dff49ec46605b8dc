"""Run the speed benchmarks and write ``benchmarks/results.json`` and ``benchmarks/results.md``.

    python -m benchmarks.run                 # full: every benchmark, peak memory, no sweep
    python -m benchmarks.run --sweep         # ... plus the full 7 x 8 x 5 A/B sweep (long)
    python -m benchmarks.run --quick         # a few minutes: proves the harness works, numbers not reported
    python -m benchmarks.run --only extraction,ab_scoring

All measurements use one torch thread (``--threads``), because other jobs share this machine; every
figure is a ratio against a baseline measured in the same run, interleaved.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from sas.files import write_text  # noqa: E402

from .cases import BENCHES, FULL, MEMORY, QUICK, run_sweep  # noqa: E402
from .harness import (ROOT, BenchResult, Context, Peer, environment, load_average, measure_memory,  # noqa: E402
                      measure_memory_here, summarize, time_interleaved)


def run_bench(name: str, ctx: Context, quick: bool, memory: bool, repeats: int | None) -> BenchResult:
    bench, cfg = BENCHES[name], QUICK if quick else FULL
    print(f"[{name}] {bench.describe(cfg)}", flush=True)
    before = load_average()
    candidates = bench.setup(ctx, cfg)
    n = repeats or (1 if quick else bench.repeats)
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    times, cpu, outputs = time_interleaved(candidates, n, warmup=bench.warmup and not quick,
                                           progress=lambda s: print(s, flush=True))
    # a candidate a setup left out (an optional peer not installed) drops its comparisons, said in the log
    missing = [c for c in bench.comparisons if c.candidate not in times or c.baseline not in times]
    for c in missing:
        print(f"  skipped: {c.candidate} vs {c.baseline} ({c.candidate if c.candidate not in times else c.baseline} "
              "was not set up: an optional package is missing)")
    comps = [summarize(times, cpu, c) for c in bench.comparisons if c not in missing]
    check = bench.check(outputs) if bench.check else {}
    after = load_average()
    mem = {}
    if memory and bench.memory:
        mem_cands = bench.setup(ctx, QUICK if quick else MEMORY)
        for cand in list(candidates)[:1] if quick else candidates:  # quick: prove the child process works
            if isinstance(mem_cands[cand], Peer):  # the peer's own child measures itself
                mem[cand] = mem_cands[cand].measure_memory()
            else:
                mem[cand] = measure_memory(name, cand, quick)
            print(f"  memory {cand}: {mem[cand]}", flush=True)
    for c in comps:
        print(f"  {c['candidate']} vs {c['baseline']}: {c['ratio_median']:.2f}x "
              f"[{c['ratio_min']:.2f}..{c['ratio_max']:.2f}]", flush=True)
    print(f"  check: {check}", flush=True)
    return BenchResult(name, bench.describe(cfg), times, cpu, comps, check, mem, before, after, date)


def _fmt_mem(m: dict | None) -> str:
    if not m:
        return ""
    if "error" in m:
        return "error"
    return f"+{m['peak_increase_mb']:.0f} MB (peak {m['peak_rss_mb']:.0f})"


def markdown(res: dict) -> str:
    env = res["environment"]
    lines = [
        "# sas speed benchmarks" + (" (QUICK MODE: numbers not meaningful)" if res["quick"] else ""), "",
        f"Run {env['date_utc']} UTC at commit {env['git_commit']}, gemma-3-270m fp32 on CPU, "
        f"{env['torch_threads']} torch thread(s) on a {env['cpu_count']}-core machine shared with other jobs "
        f"(load average at start {res['load_average_start']}, at end {res['load_average_end']}). "
        f"Command: `{res['command']}`.", "",
        "Ratio = baseline time / candidate time over the same work (> 1: the candidate is faster), taken per "
        "repeat with baseline and candidate interleaved; median [min..max] over repeats. Times are medians. "
        "Memory: peak resident set size increase during one call, in a fresh process, on the smaller `MEMORY` "
        "workload of cases.py (a few batches; peak memory is set by one batch).", "",
        "| benchmark | candidate | baseline | ratio median [min..max] | goal | met | CPU-time ratio | candidate s "
        "| baseline s | candidate memory | baseline memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in res["benchmarks"]:
        for c in b["comparisons"]:
            goal = "" if c["goal"] is None else f">= {c['goal']:.3g}x"
            met = "" if c["goal_met"] is None else ("yes" if c["goal_met"] else "**no**")
            lines.append(
                f"| {b['name']} | {c['candidate']} | {c['baseline']} | {c['ratio_median']:.2f}x "
                f"[{c['ratio_min']:.2f}..{c['ratio_max']:.2f}] (n={len(c['ratios'])}) | {goal} | {met} "
                f"| {c['cpu_ratio_median']:.2f}x | {c['candidate_seconds_median']:.2f} | {c['baseline_seconds_median']:.2f} "
                f"| {_fmt_mem(b['memory'].get(c['candidate']))} | {_fmt_mem(b['memory'].get(c['baseline']))} |")
    lines += ["", "## Workloads and correctness checks", ""]
    for b in res["benchmarks"]:
        lines.append(f"- **{b['name']}** ({b.get('date_utc', '')} UTC, load average {b['load_average_before']} -> "
                     f"{b['load_average_after']}): {b['description']}. Check: `{json.dumps(b['check'])}`")
    if res.get("sweep"):
        s = res["sweep"]
        lines += ["", "## A/B sweep wall time", "",
                  f"`sas.sweep.ab_sweep`: {len(s['behaviors'])} behaviour(s) x layers {s['layers']} x multipliers "
                  f"{s['multipliers']}, {s['n_test']} test questions, {s['n_rows']} rows"
                  + (f"; started {s['date_utc']} UTC, load average {s.get('load_average_before')} -> "
                     f"{s.get('load_average_after')}" if s.get("date_utc") else "")
                  + ". CPU time is this process's: the wall time on an idle core"
                  + (" (the wall columns are at this run's share of a busy core)." if s.get("estimated") else "."), "",
                  *([f"**Estimated**: the sweep was cut short on the busy machine after "
                     f"{', '.join(s['finished_behaviors'])}; building vectors is extrapolated by real tokens "
                     f"({s['caa_tokens_per_cpu_second']:.0f} tokens per CPU second, 17 layers), scoring by the mean "
                     f"of the finished behaviours. Vectors: {s['extraction_cpu_seconds'] / 60:.1f} CPU min, scoring: "
                     f"{s['scoring_cpu_seconds'] / 60:.1f} CPU min (`python -m benchmarks.sweep_estimate`).", ""]
                    if s.get("estimated") else []),
                  "| total (wall) | total (CPU) | building CAA vectors | scoring | other | goal |",
                  "|---|---|---|---|---|---|",
                  f"| {s['total_seconds'] / 60:.1f} min | {s.get('cpu_seconds', float('nan')) / 60:.1f} min "
                  f"| {s['extraction_seconds'] / 60:.1f} min "
                  f"| {s['scoring_seconds'] / 60:.1f} min | {s['other_seconds'] / 60:.1f} min "
                  f"| < 15 min{'' if s['goal_met'] is None else (': met' if s['goal_met'] else ': **missed**')} |"]
    if res.get("notes"):
        lines += ["", "## Notes", "", res["notes"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: proves the harness works")
    ap.add_argument("--sweep", action="store_true", help="also time the full 7 x 8 x 5 A/B sweep (quick mode "
                    "always runs a tiny sweep)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHES)},sweep")
    ap.add_argument("--repeats", type=int, default=None, help="override the repeats of every benchmark")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--out", default=str(ROOT / "results.json"), help="results JSON (Markdown beside it, .md)")
    ap.add_argument("--notes", default=None, help="a file whose text goes under Notes in the Markdown")
    ap.add_argument("--merge", nargs="+", default=None, metavar="FILE",
                    help="run nothing: combine earlier results files (e.g. a sweep run apart) into --out")
    ap.add_argument("--child-memory", nargs=2, metavar=("BENCH", "CANDIDATE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.child_memory:  # internal: peak memory of one candidate, printed as JSON
        name, cand = args.child_memory
        ctx = Context(args.quick)
        fn = BENCHES[name].setup(ctx, QUICK if args.quick else MEMORY)[cand]
        print(json.dumps(measure_memory_here(fn)))
        return 0

    if args.merge:
        return merge(args.merge, Path(args.out), args.notes)
    names = list(BENCHES) + ["sweep"] if args.only is None else args.only.split(",")
    unknown = [n for n in names if n not in BENCHES and n != "sweep"]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHES)}, sweep")
    ctx = Context(args.quick)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res = {"quick": args.quick, "command": " ".join(["python -m benchmarks.run"] + (argv or sys.argv[1:])),
           "environment": environment(torch.get_num_threads()), "load_average_start": load_average(),
           "benchmarks": [], "sweep": None}
    if args.only and out.exists():  # a partial run updates the results of an earlier one
        old = json.loads(out.read_text())
        if old.get("quick") == args.quick:
            res["benchmarks"] = [b for b in old.get("benchmarks", []) if b["name"] not in names]
            res["sweep"] = old.get("sweep") if "sweep" not in names else None
            res["earlier_runs"] = old.get("earlier_runs", []) + [{k: old.get(k) for k in (
                "command", "environment", "load_average_start", "load_average_end", "total_seconds")}]
    t0 = time.time()
    for n in names:
        if n == "sweep":
            continue
        r = run_bench(n, ctx, args.quick, memory=not args.no_memory and (not args.quick or n == "extraction"),
                      repeats=args.repeats)
        res["benchmarks"] = [b for b in res["benchmarks"] if b["name"] != n] + [asdict(r)]
        res["benchmarks"].sort(key=lambda b: list(BENCHES).index(b["name"]))
        _write(res, out)  # after every benchmark: an interrupted run keeps what it measured
    if "sweep" in names and (args.quick or args.sweep):
        print("[sweep]", flush=True)
        before, date = load_average(), time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        res["sweep"] = run_sweep(ctx, args.quick, ROOT / ".cache")
        res["sweep"].update(date_utc=date, load_average_before=before)
        res["sweep"]["load_average_after"] = load_average()
        print(f"  {res['sweep']}", flush=True)
    res["load_average_end"] = load_average()
    res["total_seconds"] = time.time() - t0
    if args.notes:
        res["notes"] = Path(args.notes).read_text().strip()
    _write(res, out)
    print(f"wrote {out} and {out.with_suffix('.md')} in {res['total_seconds']:.0f} s")
    return 0


def merge(files: list[str], out: Path, notes: str | None = None) -> int:
    """Combine results files: the first file's run is the main one; later files add the benchmarks and
    the sweep it lacks, and their run details go under ``earlier_runs``."""
    runs = [json.loads(Path(f).read_text()) for f in files]
    res = runs[0]
    for other in runs[1:]:
        have = {b["name"] for b in res["benchmarks"]}
        res["benchmarks"] += [b for b in other.get("benchmarks", []) if b["name"] not in have]
        res["sweep"] = res.get("sweep") or other.get("sweep")
        res.setdefault("earlier_runs", []).append({k: other.get(k) for k in (
            "command", "environment", "load_average_start", "load_average_end", "total_seconds")})
    res["benchmarks"].sort(key=lambda b: list(BENCHES).index(b["name"]))
    res["command"] = " && ".join([res["command"]] + [r["command"] for r in res.get("earlier_runs", [])])
    if notes:
        res["notes"] = Path(notes).read_text().strip()
    _write(res, out)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def _write(res: dict, out: Path) -> None:
    from .peer_envs import versions

    res.setdefault("load_average_end", load_average())
    if versions():
        res["environment"]["peers"] = {**res["environment"].get("peers", {}), **versions()}
    write_text(out, json.dumps(res, indent=1) + "\n")
    write_text(out.with_suffix(".md"), markdown(res))


if __name__ == "__main__":
    sys.exit(main())
