"""Estimate the full A/B sweep's time from a sweep that was cut short (``--sweep`` on a busy machine).

    python -m benchmarks.sweep_estimate [--progress benchmarks/.cache/sweep_full.progress.jsonl]

Reads the per-behaviour marks that ``run_sweep`` writes (wall and CPU time at the start and end of
each CAA vector) and extrapolates: vector building in proportion to the real (unpadded) tokens of
each behaviour's letter-balanced generate split, scoring as the mean over finished behaviours.
Prints JSON; ``run.py --merge`` can carry it into results.json as the sweep entry.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sas.files import write_text

from .harness import CACHE


def behavior_tokens() -> dict[str, int]:
    """Real tokens of each behaviour's letter-balanced generate split (question + answer scaffold)."""
    from transformers import AutoTokenizer

    from sas.load.data import BEHAVIORS, balance_letters, load_behavior
    from sas.load.models import converted_model_dir

    tok = AutoTokenizer.from_pretrained(converted_model_dir())
    return {b: sum(len(tok(p.question, add_special_tokens=False).input_ids) + 5
                   for p in balance_letters(load_behavior(b), 0)) for b in BEHAVIORS}


def estimate(progress: Path) -> dict:
    marks = [json.loads(line) for line in progress.read_text().splitlines() if line.strip()]
    tokens = behavior_tokens()
    done, t_caa, c_caa, t_score, c_score = [], 0.0, 0.0, [], []
    for i, m in enumerate(marks):
        if m["event"] != "caa_start" or i + 1 >= len(marks) or marks[i + 1]["event"] != "caa_end":
            continue
        end = marks[i + 1]
        nxt = marks[i + 2] if i + 2 < len(marks) else None
        if nxt is None:  # scoring of this behaviour did not finish
            continue
        done.append(m["behavior"])
        t_caa += end["wall"] - m["wall"]
        c_caa += end["cpu"] - m["cpu"]
        t_score.append(nxt["wall"] - end["wall"])
        c_score.append(nxt["cpu"] - end["cpu"])
    if not done:
        raise SystemExit("no behaviour finished: nothing to extrapolate from")
    per_token_wall, per_token_cpu = t_caa / sum(tokens[b] for b in done), c_caa / sum(tokens[b] for b in done)
    total_tokens = sum(tokens.values())
    n = len(tokens)
    est_caa_wall, est_caa_cpu = per_token_wall * total_tokens, per_token_cpu * total_tokens
    est_score_wall, est_score_cpu = sum(t_score) / len(done) * n, sum(c_score) / len(done) * n
    return {"estimated": True, "finished_behaviors": done, "measured_wall_seconds": t_caa + sum(t_score),
            "measured_cpu_seconds": c_caa + sum(c_score),
            "caa_tokens_per_cpu_second": 1 / per_token_cpu, "balanced_generate_tokens": tokens,
            "total_seconds": est_caa_wall + est_score_wall, "cpu_seconds": est_caa_cpu + est_score_cpu,
            "extraction_seconds": est_caa_wall, "extraction_cpu_seconds": est_caa_cpu,
            "scoring_seconds": est_score_wall, "scoring_cpu_seconds": est_score_cpu, "other_seconds": 0.0,
            "behaviors": sorted(tokens), "layers": list(range(2, 17, 2)), "multipliers": [-2.0, -1.0, 0.0, 1.0, 2.0],
            "n_test": "all (50)", "n_rows": 7 * 8 * 5, "goal_seconds": 900,
            "goal_met": est_caa_cpu + est_score_cpu <= 900}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--progress", default=str(CACHE / "sweep_full.progress.jsonl"))
    ap.add_argument("--out", default=None, help="also write {'sweep': estimate} here, for run.py --merge")
    args = ap.parse_args(argv)
    est = estimate(Path(args.progress))
    print(json.dumps(est, indent=1))
    if args.out:
        write_text(args.out, json.dumps({"benchmarks": [], "sweep": est, "command":
                                         "python -m benchmarks.sweep_estimate"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
