"""Benchmark `sas serve`: throughput and latency with 1, 4 and 16 concurrent clients, steered against unsteered.

    python -m benchmarks.serve            # full: 2 repeats (about 15 min on a busy 2-core box)
    python -m benchmarks.serve --quick    # proves it runs (numbers not reported)

Starts the real server (`sas serve`, one torch thread, its own process) on a free 127.0.0.1 port and
calls it with the official `openai` client from threads. Conditions per request:
``unsteered``; ``dense`` (sentiment CAA at layer 6, strength +-1.5 alternating); ``sparse`` (SAS in the
shipped SAE gemma-3-270m-L9-4k, strength 8); ``mixed`` (each request a different one of the above, so
the batches carry per-row steering). Every request asks for the same number of tokens (``ignore_eos``),
greedy. At each concurrency level the conditions run interleaved, the order alternating every repeat;
throughput = completion tokens / wall time of the level, latency = per request. Ratios (steered /
unsteered throughput, unsteered / steered p50 latency: > 1 means steering is free or faster) are taken
per repeat, reported as median [min..max] over repeats.

Writes ``benchmarks/serve_results.json`` and ``benchmarks/serve_results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/serve.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from sas.serve.local import free_port  # noqa: E402

from .harness import CACHE, ROOT, load_average  # noqa: E402

VECTORS = CACHE / "serve_vectors"
PROMPTS = ["I think that the movie was", "The weather today is", "My favourite food is",
           "When I arrived at the hotel, the staff", "Yesterday the city council decided",
           "The best thing about this phone is", "Our trip to the mountains", "Honestly, the new album"]
CONDITIONS = ("unsteered", "dense", "sparse", "mixed")
LEVELS = {"full": {1: 3, 4: 8, 16: 16}, "quick": {1: 1, 4: 4, 16: 16}}  # clients -> requests per level


def build_vectors() -> None:
    """Save the sentiment CAA and SAS vectors under ``benchmarks/.cache/serve_vectors`` (a child process)."""
    if (VECTORS / "sentiment.safetensors").exists() and (VECTORS / "sentiment_sas.safetensors").exists():
        return
    code = f"""
import torch; torch.set_num_threads(1)
import sas
from sas.concepts.tasks import sentiment_pairs
from sas.methods.sas import sas_vector_from_texts
m = sas.load_model()
pos, neg = sentiment_pairs()
sas.contrastive_vector(m, pos, neg, [6], behavior="sentiment").save({str(VECTORS / 'sentiment')!r})
sas_vector_from_texts(m, sas.load_sae("gemma-3-270m-L9-4k", m), pos, neg, behavior="sentiment").save(
    {str(VECTORS / 'sentiment_sas')!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT.parent)


def steer_for(condition: str, i: int) -> list[dict] | None:
    dense = [{"vector": "sentiment", "strength": 1.5 if i % 2 == 0 else -1.5}]
    sparse = [{"vector": "sentiment_sas", "strength": 8.0}]
    if condition == "mixed":
        return [None, dense, sparse, [{"vector": "sentiment", "strength": -1.5}]][i % 4]
    return {"unsteered": None, "dense": dense, "sparse": sparse}[condition]


def run_level(client, condition: str, clients: int, n_requests: int, max_tokens: int) -> dict:
    """``n_requests`` requests from ``clients`` threads; returns wall time, tokens and per-request latencies."""
    def one(i: int):
        t0 = time.perf_counter()
        steer = steer_for(condition, i)
        r = client.completions.create(model="gemma-3-270m", prompt=PROMPTS[i % len(PROMPTS)], max_tokens=max_tokens,
                                      temperature=0, extra_body={"ignore_eos": True,
                                                                 **({"steer": steer} if steer else {})})
        return time.perf_counter() - t0, r.usage.completion_tokens

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        out = list(pool.map(one, range(n_requests)))
    wall = time.perf_counter() - t0
    lat = sorted(x for x, _ in out)
    tokens = sum(n for _, n in out)
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall, "latencies_s": lat,
            "p50_s": statistics.median(lat), "p95_s": _percentile(lat, 95)}


def _percentile(xs: list[float], q: float) -> float:
    """The q-th percentile by linear interpolation between order statistics."""
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def start_server(port: int, max_batch: int = 16) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "sas.cli", "serve", "--port", str(port), "--vectors-dir", str(VECTORS),
           "--threads", "1", "--max-batch", str(max_batch), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT.parent)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sas serve exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.terminate()
    raise RuntimeError("sas serve did not answer /health within 600 s")


def _span(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "values": xs}


def markdown(res: dict) -> str:
    env = res["environment"]
    lines = [f"# sas serve benchmark{' (QUICK MODE: numbers not meaningful)' if res['quick'] else ''}", "",
             f"Run {env['date_utc']} UTC at commit {env['git_commit']}, gemma-3-270m fp32 on CPU, server on 1 torch "
             f"thread, {env['cpu_count']}-core machine shared with other jobs (load average {res['load_average_start']} "
             f"at start, {res['load_average_end']} at end). {res['max_tokens']} new tokens per request, greedy, "
             f"{res['repeats']} repeat(s); command `{res['command']}`.", "",
             "Throughput = completion tokens / wall time at that concurrency; ratio = steered / unsteered "
             "throughput per repeat (> 1: steered is faster), median [min..max] over repeats. Latency p50/p95 "
             "over the requests of all repeats.", "",
             "| clients | requests | condition | tokens/s | ratio vs unsteered | p50 latency s | p95 latency s | mean batch |",
             "|---|---|---|---|---|---|---|---|"]
    for level in res["levels"]:
        for cond in CONDITIONS:
            r = level["conditions"][cond]
            ratio = "1" if cond == "unsteered" else \
                f"{r['throughput_ratio']['median']:.2f} [{r['throughput_ratio']['min']:.2f}..{r['throughput_ratio']['max']:.2f}]"
            lines.append(f"| {level['clients']} | {level['requests']} | {cond} | {r['tokens_per_s']['median']:.1f} | "
                         f"{ratio} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['mean_batch_rows']['median']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "serve_results.json"))
    args = p.parse_args(argv)
    import httpx
    import torch
    from openai import OpenAI

    from .harness import environment

    repeats = args.repeats or (1 if args.quick else 2)
    max_tokens = args.max_tokens or (4 if args.quick else 16)
    build_vectors()
    port = free_port()
    start = load_average()
    proc = start_server(port)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=1200)
        run_level(client, "mixed", 4, 4, 2)  # warm-up: first-call allocations, W_U copies, the SAE's path
        levels = []
        for clients, n in LEVELS["quick" if args.quick else "full"].items():
            runs = {c: [] for c in CONDITIONS}
            for r in range(repeats):
                for cond in (CONDITIONS if r % 2 == 0 else CONDITIONS[::-1]):
                    h0 = httpx.get(f"http://127.0.0.1:{port}/health").json()
                    out = run_level(client, cond, clients, n, max_tokens)
                    h1 = httpx.get(f"http://127.0.0.1:{port}/health").json()
                    out["mean_batch_rows"] = (h1["rows_run"] - h0["rows_run"]) / max(h1["batches_run"] - h0["batches_run"], 1)
                    runs[cond].append(out)
                    print(f"clients {clients:2d} repeat {r + 1} {cond:9s}: {out['tokens_per_s']:.1f} tok/s, "
                          f"p50 {out['p50_s']:.2f} s, p95 {out['p95_s']:.2f} s, mean batch {out['mean_batch_rows']:.1f} rows",
                          flush=True)
            conds = {}
            for cond, rs in runs.items():
                lat = sorted(x for o in rs for x in o["latencies_s"])
                conds[cond] = {"tokens_per_s": _span([o["tokens_per_s"] for o in rs]), "p50_s": statistics.median(lat),
                               "p95_s": _percentile(lat, 95), "mean_batch_rows": _span([o["mean_batch_rows"] for o in rs]),
                               "runs": rs}
                if cond != "unsteered":
                    base = runs["unsteered"]
                    conds[cond]["throughput_ratio"] = _span([o["tokens_per_s"] / b["tokens_per_s"]
                                                             for o, b in zip(rs, base)])
                    conds[cond]["p50_latency_ratio"] = _span([b["p50_s"] / o["p50_s"] for o, b in zip(rs, base)])
            levels.append({"clients": clients, "requests": n, "conditions": conds})
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    env = environment(torch.get_num_threads())
    env["torch_threads"] = 1  # the server's
    res = {"environment": env, "quick": args.quick, "repeats": repeats, "max_tokens": max_tokens,
           "command": "python -m benchmarks.serve" + (" --quick" if args.quick else ""),
           "load_average_start": start, "load_average_end": load_average(), "levels": levels}
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, out)
    md = out.with_suffix(".md")
    md.with_name(md.name + ".tmp").write_text(markdown(res))
    os.replace(md.with_name(md.name + ".tmp"), md)
    print(markdown(res))


if __name__ == "__main__":
    main()
