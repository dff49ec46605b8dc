"""Compare two finished ``sas bench`` runs that differ only in their SAEs (``sas.reports.sae_sets``).

Each run is rebuilt from its results file with the settings it ran with (nothing is generated: a run that is not
finished is an error, so finish it first with its own command), then the sparse methods' test scores on the two
SAE sets are compared concept by concept, paired over the same test prompts.

    python scripts/compare_sae_sets.py \\
        --run "4k SAEs, 1.5M tokens=results/bench.jsonl:gemma-3-270m-L5-4k,gemma-3-270m-L9-4k" \\
        --run "16k SAEs, 30M tokens=results/bench_new.jsonl:gemma-3-270m-L5-16k-topk,gemma-3-270m-L9-16k-topk" \\
        --out docs/bench/sae_sets.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sas.files import write_atomic  # noqa: E402
from sas.hooks import layer_of  # noqa: E402
from sas.load.saes import registry  # noqa: E402
from sas.reports.sae_sets import compare_lines  # noqa: E402
from sas.runs.bench import FLUENCY, MAX_EXTEND, N_TEST, N_TUNE, STRENGTHS, bench  # noqa: E402

ALL = "caa,actadd,sas,sas_dense,prompt,sas_diff,sas_os,sas_clamp,sae_ts,sae_ts_pinv,sas_dtc"  # both final runs' methods


def unfinished(path: Path):
    """An executor that refuses to run anything: comparing generates nothing."""
    def refuse(grid, shards, on_row):
        n = sum(len(s) for s in shards)
        raise SystemExit(f"{path} is not finished ({n} conditions left, e.g. {shards[0][0]}): finish it with the "
                         "sas bench command that wrote it (same settings), then compare")
    return refuse


def run_dtype(path: Path) -> str:
    """The dtype a results file's rows were made in (its first row's)."""
    with open(path) as f:
        first = f.readline()
    if not first.strip():
        raise SystemExit(f"{path} has no rows: run the benchmark first")
    return json.loads(first).get("dtype", "float32")


def parse_run(s: str) -> tuple[str, Path, dict[int, str]]:
    """``LABEL=FILE:SAE,SAE`` -> (label, file, {layer: SAE name})."""
    label, sep, rest = s.partition("=")
    path, sep2, names = rest.rpartition(":")
    if not (sep and sep2 and label and path and names):
        raise argparse.ArgumentTypeError(f"--run {s!r}: give LABEL=FILE:SAE,SAE (the results file and the run's SAEs)")
    if not Path(path).exists():
        raise argparse.ArgumentTypeError(f"--run {s!r}: no results file at {path}")
    cards = registry()
    saes = {}
    for n in names.split(","):
        if n not in cards:
            raise argparse.ArgumentTypeError(f"--run {s!r}: {n!r} is not a shipped SAE (shipped: {', '.join(sorted(cards))})")
        saes[layer_of(cards[n]["hook"])] = n
    return label, Path(path), saes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=parse_run, action="append", required=True, help="LABEL=FILE:SAE,SAE (twice)")
    p.add_argument("--methods", default=ALL)
    p.add_argument("--dtype", help="the dtype the runs used (default: read from each results file's rows)")
    p.add_argument("--n-tune", type=int, default=N_TUNE)
    p.add_argument("--n-test", type=int, default=N_TEST)
    p.add_argument("--budget", type=float, help="the budget to compare at (default: the middle one)")
    p.add_argument("--out", type=Path, help="write the Markdown here (default: print it)")
    args = p.parse_args()
    if len(args.run) != 2:
        p.error(f"give --run twice (got {len(args.run)})")
    results = []
    for label, path, saes in args.run:
        results.append(bench(None, saes, (), args.methods.split(","), None, STRENGTHS, None, args.n_tune, args.n_test,
                             16, 0, path, dtype=args.dtype or run_dtype(path), fluency=FLUENCY, extend=MAX_EXTEND, progress=False,
                             executor=unfinished(path)))
    lines = [f"# {args.run[0][0]} against {args.run[1][0]}", "",
             *(f"- {label}: `{path}` ({', '.join(saes.values())})" for label, path, saes in args.run), "",
             *compare_lines(results[0], results[1], (args.run[0][0], args.run[1][0]), args.budget)]
    if args.out:
        write_atomic(args.out, lambda t: t.write_text("\n".join(lines)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
