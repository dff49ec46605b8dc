"""Timing and memory machinery shared by every benchmark.

A benchmark is a :class:`Bench`: a ``setup(ctx, cfg)`` that returns zero-argument candidates
(name -> callable), the comparisons to report (candidate vs baseline, with an optional goal),
and an optional ``check`` of the candidates' outputs (do they compute the same thing?).

Timing is interleaved: every repeat runs each candidate once, in an order that alternates
between repeats, so a change in background load hits baseline and candidate alike. A ratio is
taken per repeat (baseline time / candidate time, so > 1 means the candidate is faster) and
reported as median, min and max over repeats.

Peak memory runs one candidate in a fresh child process: after setup, the kernel's high-water mark
is reset (``/proc/self/clear_refs``) and the peak resident set size of the one call is read back.

A peer library that needs its own virtual environment fits the same shape: its candidate
is a callable that runs a child process in that environment and returns the time the child measured
(return a :class:`Timed` to report a time measured elsewhere instead of the wall time of the call).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"


@dataclass
class Comparison:
    candidate: str
    baseline: str
    goal: float | None = None  # minimum speed ratio (baseline time / candidate time)
    note: str = ""


@dataclass
class Bench:
    name: str
    setup: Callable[["Context", dict], dict[str, Callable[[], Any]]]
    comparisons: list[Comparison]
    check: Callable[[dict[str, Any]], dict] | None = None
    repeats: int = 3  # full mode; quick mode runs 1
    warmup: bool = False  # run every candidate once, untimed, before the timed repeats
    memory: bool = True  # measure peak memory (full mode)
    describe: Callable[[dict], str] = lambda cfg: ""


@dataclass
class Timed:
    """A result whose time was measured by the callee (e.g. a child process)."""

    seconds: float
    value: Any = None
    cpu_seconds: float | None = None  # the callee's CPU time (default: ``seconds``)


class Context:
    """Lazily loaded shared state: the TransformerLens model, the Hugging Face model, data, a vector."""

    def __init__(self, quick: bool):
        self.quick = quick
        self._model = self._hf = self._vector = None

    @property
    def model(self):
        if self._model is None:
            from sas import load_model
            from sas.forward.run import fast_layout

            self._model = load_model("gemma-3-270m")
            # sas re-lays the weights out on its first forward pass; do it up front so the naive
            # baselines, which share this model, run on the same layout whatever the order
            fast_layout(self._model)
        return self._model

    @property
    def hf(self):
        """``(hf_model, tokenizer)``: the same weights as :attr:`model`, as Hugging Face loads them."""
        if self._hf is None:
            from sas.load.models import load_hf

            self._hf = load_hf("gemma-3-270m")
        return self._hf

    def vector(self, layers=(4, 8), n_pairs: int = 64):
        """A CAA sycophancy vector, saved under ``benchmarks/.cache`` so child processes reuse it."""
        if self._vector is None:
            from sas import SteeringVector, caa_vector, load_behavior

            path = CACHE / f"caa_sycophancy_{n_pairs}_{'_'.join(map(str, layers))}"
            if path.with_suffix(".safetensors").exists():
                self._vector = SteeringVector.load(path)
            else:
                v = caa_vector(self.model, load_behavior("sycophancy")[:n_pairs], list(layers), "sycophancy",
                               progress=False)
                CACHE.mkdir(exist_ok=True)
                v.save(path)
                self._vector = v
        return self._vector


    @property
    def model_bf16(self):
        """The same model in bfloat16 (bf16 against fp32 in one run)."""
        if getattr(self, "_model_bf16", None) is None:
            from sas import load_model
            from sas.forward.run import fast_layout

            self._model_bf16 = load_model("gemma-3-270m", dtype="bfloat16")
            fast_layout(self._model_bf16)
        return self._model_bf16

    def sparse_vector(self, sae_name: str = "gemma-3-270m-L9-16k", n_pairs: int = 64, tau: float = 0.1):
        """A SAS sycophancy vector in a shipped SAE (built each run: the SAE may have been retrained)."""
        if getattr(self, "_sparse", None) is None or self._sparse[0] != sae_name:
            from sas import load_behavior, load_sae
            from sas.methods.sas import sas_vector

            sae = load_sae(sae_name, self.model)
            self._sparse = (sae_name, sas_vector(self.model, sae, load_behavior("sycophancy")[:n_pairs], tau=tau,
                                                 behavior="sycophancy", progress=False))
        return self._sparse[1]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def time_interleaved(candidates: dict[str, Callable[[], Any]], repeats: int, warmup: bool = False,
                     progress: Callable[[str], None] = print) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Run each candidate ``repeats`` times, interleaved, alternating the order every repeat.

    Returns ``(times, cpu, outputs)``: wall and CPU seconds (this process) per repeat for each candidate,
    and each candidate's last output.
    """
    names = list(candidates)
    times = {n: [] for n in names}
    cpu = {n: [] for n in names}
    outputs = {}
    if warmup:
        for n in names:
            outputs[n] = candidates[n]()
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            t0, c0 = time.perf_counter(), time.process_time()
            out = candidates[n]()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if isinstance(out, Timed):
                dt, dc, out = out.seconds, out.seconds if out.cpu_seconds is None else out.cpu_seconds, out.value
            times[n].append(dt)
            cpu[n].append(dc)
            outputs[n] = out
            progress(f"  repeat {r + 1}/{repeats} {n}: {dt:.2f} s wall, {dc:.2f} s cpu")
    return times, cpu, outputs


def summarize(times: dict[str, list[float]], cpu: dict[str, list[float]], comp: Comparison) -> dict:
    """Per-repeat speed ratios (baseline / candidate) of one comparison, with median, min and max;
    the same from CPU time (less sensitive to other jobs on the machine)."""
    ratios = [b / c for b, c in zip(times[comp.baseline], times[comp.candidate])]
    cpu_ratios = [b / c for b, c in zip(cpu[comp.baseline], cpu[comp.candidate])]
    med = statistics.median(ratios)
    return {"candidate": comp.candidate, "baseline": comp.baseline, "ratios": ratios,
            "ratio_median": med, "ratio_min": min(ratios), "ratio_max": max(ratios),
            "candidate_seconds_median": statistics.median(times[comp.candidate]),
            "baseline_seconds_median": statistics.median(times[comp.baseline]),
            "cpu_ratio_median": statistics.median(cpu_ratios), "cpu_ratios": cpu_ratios,
            "goal": comp.goal, "goal_met": None if comp.goal is None else med >= comp.goal, "note": comp.note}


class Peer:
    """A candidate that runs one job of ``benchmarks/peers.py`` in a peer library's environment.

    Each call starts a child process that loads the same Hugging Face folder, warms up, and times the work
    alone; the call returns that time as :class:`Timed`. Only one child runs at a time (memory: the
    machine is shared). ``measure_memory()`` runs the job once more with the peak-memory reset.
    """

    def __init__(self, peer: str, job: dict, decode: Callable[[Any], Any] | None = None):
        self.peer, self.job, self.decode = peer, job, decode

    def run(self, memory: bool = False) -> dict:
        import tempfile

        from .peer_envs import peer_env
        from sas.load.models import converted_model_dir

        python, env, _ = peer_env(self.peer)
        with tempfile.TemporaryDirectory() as tmp:
            job = {**self.job, "peer": self.peer, "model_dir": str(converted_model_dir("gemma-3-270m")),
                   "threads": torch.get_num_threads(), "memory": memory}
            if job["task"] == "extract":
                job["out"] = f"{tmp}/vectors.pt"
            path = Path(tmp) / "job.json"
            path.write_text(json.dumps(job))
            r = subprocess.run([python, str(ROOT / "peers.py"), str(path)], capture_output=True, text=True, env=env)
            if r.returncode != 0:
                raise RuntimeError(f"{self.peer} child failed:\n{r.stderr[-3000:]}")
            out = json.loads(r.stdout.strip().splitlines()[-1])
            if job.get("out"):
                out["value"] = torch.load(job["out"])
        if self.decode:
            out["value"] = self.decode(out["value"])
        return out

    def __call__(self) -> Timed:
        out = self.run()
        return Timed(out["seconds"], out["value"], out["cpu_seconds"])

    def measure_memory(self) -> dict:
        return self.run(memory=True)["memory"]


# ---- peak memory, one candidate per child process ----

def _status_kb(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def measure_memory_here(fn: Callable[[], Any]) -> dict:
    """Peak RSS of one call of ``fn`` in this process (Linux): resets the high-water mark first."""
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = _status_kb("VmRSS")
    fn()
    peak = _status_kb("VmHWM")
    return {"rss_before_mb": before / 1024, "peak_rss_mb": peak / 1024, "peak_increase_mb": (peak - before) / 1024}


def measure_memory(bench: str, candidate: str, quick: bool) -> dict:
    """Run ``candidate`` of ``bench`` once in a fresh child process and return its peak memory."""
    cmd = [sys.executable, "-m", "benchmarks.run", "--child-memory", bench, candidate] + (["--quick"] if quick else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=ROOT.parent, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def environment(threads: int) -> dict:
    import platform

    import transformer_lens
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT.parent, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "git_commit": commit,
            "torch_threads": threads, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "transformer_lens": getattr(transformer_lens, "__version__", "3.9.0"),
            "model": "gemma-3-270m (fp32)"}


@dataclass
class BenchResult:
    name: str
    description: str
    times: dict[str, list[float]]
    cpu_times: dict[str, list[float]]
    comparisons: list[dict]
    check: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)
    load_average_before: list[float] = field(default_factory=list)
    load_average_after: list[float] = field(default_factory=list)
    date_utc: str = ""
