"""Grids on Ray (sas/runs/ray.py): a local cluster of 2 CPUs, actors that each build their runner once, rows
equal to a serial run's, a worker killed mid-run that loses and duplicates nothing, and the errors before any
work (an unreachable address, workers without the package).

The actors run the tiny random model (seeded, so every process builds the same weights) with the real
tokenizer and the real A/B data: loading gemma-3-270m in two actors at once would take 8 GB and the two cores.
"""

import sys
import time
from contextlib import contextmanager

import pytest

ray = pytest.importorskip("ray", reason="the Ray extra is not installed: pip install -e '.[ray]'")

from ray import cloudpickle  # noqa: E402  (Ray serialises with its own copy)

from sas.runs.grid import Grid, Runner, run_grid  # noqa: E402
from sas.runs.ray import check_reachable, check_workers, connect, ray_executor, wait_for_actors  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors get make_runner by value

N_TEST = 6


def tiny_model():
    """The same tiny random Gemma-like model as conftest's ``tiny`` fixture, built from its seed."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    from sas.load.models import converted_model_dir

    tok = AutoTokenizer.from_pretrained(converted_model_dir("gemma-3-270m"))
    cfg = HookedTransformerConfig(
        n_layers=3, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=256, d_vocab=len(tok),
        act_fn="gelu", attn_only=False, normalization_type="RMS", positional_embedding_type="rotary",
        rotary_dim=8, seed=0, device="cpu", dtype=torch.float32)
    model = HookedTransformer(cfg, tokenizer=tok)
    model.cfg.model_name = "tiny"
    return model.eval()


class SlowRunner(Runner):
    """The real runner, waiting ``delay`` seconds per condition so that a kill lands mid-shard."""

    delay = 0.0

    def run(self, conditions, on_row=None):
        time.sleep(self.delay)
        return super().run(conditions, on_row)


def make_runner(grid, delay=0.0):
    r = SlowRunner(grid, model=tiny_model(), progress=False)
    r.delay = delay
    return r


def make_slow_runner(grid):
    return make_runner(grid, delay=1.0)


def small_grid():
    return Grid("ab", items=["sycophancy", "refusal"], methods=["caa"], layers=[0, 1],
                multipliers={"caa": [-1.0, 0.0, 1.0]}, eval_settings={"n_test": N_TEST})


def same(rows):
    """Rows without their timings, in a canonical order."""
    timing = lambda k: k in ("seconds", "cpu_seconds") or k.startswith("seconds_")  # noqa: E731
    return sorted(({k: v for k, v in r.items() if not timing(k)} for r in rows), key=lambda r: sorted(r.items()))


@pytest.fixture(scope="module")
def cluster():
    import os

    # the machine is shared: Ray's memory monitor would kill these small workers for other processes' memory
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@contextmanager
def one_thread():
    """torch on one thread, as in the actors (ShardWorker sets threads_per_worker, 1 here): the serial rows are
    then bit-for-bit the actors' rows. On two threads, float sums run in another order and rows differ in the
    7th digit, which is not what these tests check."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def serial_rows(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "rows.jsonl"
    with one_thread():
        return run_grid(small_grid(), out=out, model=tiny, progress=False)


def read_lines(path):
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow  # tiny model, but minutes of CPU: out of the fast lane
def test_rows_equal_a_serial_run_with_a_worker_killed_mid_run(cluster, serial_rows, tiny, tmp_path):
    """Two actors share the grid; one is killed after the first rows. Its unfinished conditions run again on a
    new actor: the rows (returned and in the one file) equal the serial run's, none lost, none twice.

    (One test for both checks of the issue: the actor that is not killed runs the plain path, and starting
    Ray actors costs about a minute each on this shared machine, so a second, unkilled run would double it.)"""
    import threading

    out = tmp_path / "killed.jsonl"
    killed = []

    def kill_one():
        name = wait_for_actors(n=1)[0]
        deadline = time.time() + 120
        while not (out.exists() and out.read_text().count("\n") >= 2) and time.time() < deadline:
            time.sleep(0.1)  # mid-run: after some rows, before the end
        ray.kill(ray.get_actor(name))
        killed.append(name)

    t = threading.Thread(target=kill_one, daemon=True)
    t.start()
    rows = run_grid(small_grid(), out=out, model=tiny,
                    executor=ray_executor(workers=2, make_runner=make_slow_runner), progress=False)
    t.join(5)
    assert killed, "no worker was killed"
    assert len(rows) == len(serial_rows) == 12 and all(r is not None for r in rows)
    lines = read_lines(out)
    assert len(lines) == 12, f"{len(lines)} rows in the file, expected 12 (none lost, none twice)"
    assert same(lines) == same(rows) == same(serial_rows)


def test_unreachable_address_fails_fast():
    t0 = time.time()
    with pytest.raises(ConnectionError, match="ray start --head"):
        check_reachable("127.0.0.1:9")  # the discard port: nobody listens
    with pytest.raises(ValueError, match="host:port"):
        check_reachable("no-port-here")
    assert time.time() - t0 < 15


def test_cli_refuses_an_unreachable_address_before_loading_the_model(monkeypatch, capsys):
    import sas.cli as cli

    monkeypatch.setattr(cli, "_model", lambda args: pytest.fail("the model loaded before the address was checked"))
    with pytest.raises(SystemExit) as e:
        cli.main(["sweep", "--behavior", "sycophancy", "--layers", "2", "--ray", "127.0.0.1:9"])
    assert "cannot reach a Ray cluster at 127.0.0.1:9" in str(e.value) and "ray start --head" in str(e.value)


def test_workers_without_the_package_are_refused_before_work(cluster):
    assert check_workers()["ok"]  # this cluster's workers import sas
    with pytest.raises(ImportError, match="cannot import sas_missing_package.*install it on every node"):
        check_workers("sas_missing_package")
    connect()  # an initialised Ray is used as it is, and passes the check


def test_without_ray_nothing_of_ray_is_imported():
    import subprocess

    code = ("import sys, sas, sas.cli, sas.runs.grid; sas.load_model; "
            "print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


@pytest.mark.slow  # tiny model, but minutes of CPU: out of the fast lane
def test_bench_on_ray_gives_the_serial_rows(cluster, tiny, tmp_path):
    """`sas bench --ray`: both splits of the benchmark as Ray shards, each vector's strengths in one batch on its
    actor, rows equal to a serial run's (per-row sampling seeds make the texts independent of the batch)."""
    from sas.runs.bench import bench

    kw = dict(concepts=["weddings"], methods=["caa", "prompt"], layers=[1], strengths=[0.05, 0.2], n_tune=4,
              n_test=6, max_new_tokens=4, budgets=(1.5, 3.0), progress=False)
    with one_thread():
        serial = bench(tiny, None, out=tmp_path / "serial.jsonl", **kw)
    on_ray = bench(tiny, None, out=tmp_path / "ray.jsonl", executor=ray_executor(workers=2, make_runner=make_runner),
                   **kw)
    assert len(serial.test) >= 2
    assert same(on_ray.tuning) == same(serial.tuning) and same(on_ray.test) == same(serial.test)
    # the actors cache each vector beside the rows, as a serial run does: a resumed run builds none again
    cached = lambda out: sorted(f.name for f in (tmp_path / out).iterdir())  # noqa: E731
    assert cached("ray.vectors") == cached("serial.vectors") and any(n.startswith("caa_weddings") for n in
                                                                     cached("ray.vectors"))


def test_an_empty_address_is_refused_not_run_without_ray(monkeypatch, capsys):
    import sas.cli as cli

    monkeypatch.setattr(cli, "_model", lambda args: pytest.fail("ran although --ray was given an empty address"))
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--behavior", "sycophancy", "--layers", "2", "--ray", ""])  # --ray "$RAY_ADDRESS", unset
    assert "--ray got an empty address (an unset $RAY_ADDRESS?)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="empty address"):
        connect(" ")


_JOIN = r"""
import sys
from sas.runs.ray import connect
try:
    connect(sys.argv[1])
except ConnectionError as e:
    sys.exit(str(e))
"""


@pytest.mark.slow
def test_a_token_mismatch_is_not_reported_as_no_cluster(tmp_path):
    """A head with token authentication and a driver with another token: the message says a cluster answers and
    names the token, instead of telling the user to start a cluster that runs."""
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_memory_monitor_refresh_ms": "0"}
    # --block: the head's daemons are this process's children, and stop with it (no `ray stop`, which would stop
    # every Ray on the machine)
    temp = tempfile.mkdtemp(prefix="sas-ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    head = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block",
                             f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                             "--node-ip-address=127.0.0.1", f"--temp-dir={temp}"],
                            env={**env, "RAY_AUTH_TOKEN": "a" * 32}, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "head.log", "w"), start_new_session=True)
    try:
        t0 = time.time()
        while True:  # the head is up when its port opens
            try:
                check_reachable(f"127.0.0.1:{port}", timeout=5)
                break
            except ConnectionError:
                assert time.time() - t0 < 120 and head.poll() is None, (tmp_path / "head.log").read_text()[-2000:]
                time.sleep(1)
        run = subprocess.run([sys.executable, "-c", _JOIN, f"127.0.0.1:{port}"], capture_output=True, text=True,
                             env={**env, "RAY_AUTH_TOKEN": "b" * 32}, timeout=300)
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
    assert run.returncode != 0
    err = run.stderr.strip().splitlines()[-1]
    assert f"a Ray cluster answers at 127.0.0.1:{port} but this driver could not join it" in err, err
    assert "RAY_AUTH_TOKEN" in err and "ray start --head" not in err
