"""Run a grid's shards on a Ray cluster: one actor per worker loads the model and SAEs once (a
:class:`~sas.runs.grid.Runner`), shards go to free actors, and every row streams back to the driver,
which writes it to the one results file as it arrives.

    from sas.runs.grid import Grid, run_grid
    from sas.runs.ray import ray_executor
    run_grid(grid, out="results/sweep.jsonl", executor=ray_executor("auto"))   # or "head-host:6379"

``sas sweep --ray [ADDRESS]`` does the same. Nothing here imports Ray until a run asks for it.

Exactly once: the driver keeps the conditions whose rows it has written; an actor that dies (a killed
process, a lost node, out of memory) is replaced and its shard goes back to the queue with only the
conditions it had not finished, up to ``max_attempts`` times. Rows go through the results store, so a
driver killed at any point resumes from the file like a serial run.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections import deque

INSTALL = 'pip install "sas[ray]"'
EMPTY_ADDRESS = ("--ray got an empty address (an unset $RAY_ADDRESS?): give host:6379, ray://host:10001, auto (the "
                 "cluster this machine belongs to) or local, or leave --ray out to run without Ray")


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"--ray needs Ray, an optional extra: {INSTALL} (or pip install 'ray==2.60.*')") from e
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Raise ``ConnectionError`` (naming the fix) unless a TCP connection to ``address`` opens within ``timeout``.

    ``ray.init`` itself waits minutes on an address nobody listens on; this answers in seconds.
    ``address`` is ``host:port`` (the head's GCS port, 6379 by default) or ``ray://host:port`` (Ray Client, 10001).
    """
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad Ray address {address!r}: give host:port (the head node's GCS port, 6379 by default), "
                         "ray://host:10001 (Ray Client), auto (the cluster this machine belongs to) or local")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"cannot reach a Ray cluster at {address} ({e}). Start one with `ray start --head "
                              f"--port={port}` on the head node (and `ray start --address={host}:{port}` on the "
                              "others), check the host, port and firewall, or drop --ray to run on this machine") from e


def connect(address: str | None = None, num_cpus: int | None = None, runtime_env: dict | None = None,
            timeout: float = 300.0) -> None:
    """Join (or start) a Ray cluster and check that its workers can import sas, before any work starts.

    ``address``: ``None``/``"local"`` starts a cluster on this machine (``num_cpus`` CPUs); ``"auto"`` joins the
    one this machine belongs to; ``host:port`` or ``ray://host:port`` a remote head. An already initialised
    Ray is used as it is. ``runtime_env`` goes to ``ray.init`` (e.g. ``{"py_modules": [...]}``).
    """
    if address is not None and not address.strip():
        raise ValueError(EMPTY_ADDRESS)
    ray = _import_ray()
    if address not in (None, "local", "auto"):
        check_reachable(address)  # also when Ray is up: an address given is an address to check
    if not ray.is_initialized():
        if address in (None, "local"):
            ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env)
        else:
            try:
                ray.init(address=address, runtime_env=runtime_env)
            except ConnectionError as e:
                if address == "auto":
                    raise ConnectionError(f"could not join a Ray cluster on this machine (--ray auto): {e}. Start "
                                          "one with `ray start --head`, or give its address (host:6379)") from e
                # check_reachable passed: a cluster runs there, and refused this driver
                raise ConnectionError(
                    f"a Ray cluster answers at {address} but this driver could not join it: {e}. If the cluster "
                    "uses token authentication (RAY_AUTH_MODE=token), give this process its token: RAY_AUTH_MODE="
                    "token and RAY_AUTH_TOKEN (or the file ~/.ray/auth_token, or RAY_AUTH_TOKEN_PATH) as on the "
                    "head node. Otherwise check that both run the same Ray and Python versions") from e
    check_workers(timeout=timeout)


def check_workers(module: str = "sas", timeout: float = 300.0) -> dict:
    """Run one small task on the cluster that imports ``module`` there; return what it found
    (``version``, ``file``). Raises ``ImportError`` naming the fix if the workers cannot import it, and
    ``TimeoutError`` if no worker ran the task within ``timeout`` seconds."""
    ray = _import_ray()

    def probe(name):  # nested: Ray sends it by value, so it runs where sas is missing
        import importlib
        import importlib.util

        try:  # light: `import sas` is lazy, and the runner is only located (torch loads in the actors)
            m = importlib.import_module(name)
            if importlib.util.find_spec(f"{name}.runs.grid") is None:
                raise ImportError(f"{name} {getattr(m, '__version__', '?')} has no runs.grid: an older version")
        except Exception as e:  # noqa: BLE001 - reported to the driver as text
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}
        return {"ok": True, "version": getattr(m, "__version__", "?"), "file": getattr(m, "__file__", "?")}

    ref = ray.remote(num_cpus=0)(probe).remote(module)
    try:
        found = ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError as e:
        ray.cancel(ref, force=True)
        raise TimeoutError(f"no Ray worker ran a short check (import sas) within {timeout:.0f} s: is the cluster busy, or "
                           "are its nodes still starting? (`ray status` shows them)") from e
    if not found["ok"]:
        raise ImportError(f"the Ray workers cannot import {module} ({found['error']}): install it on every node, "
                           f"the same version as here ({INSTALL} from this checkout, with torch first), or let Ray "
                           f"ship it: connect(..., runtime_env={{'py_modules': ['{_package_dir()}']}}) (its "
                           "dependencies must still be on the nodes)")
    return found


def _package_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ShardWorker:
    """A Ray actor's state: one :class:`~sas.runs.grid.Runner` (model and SAEs loaded once per actor).

    ``make_runner(grid)`` builds it (default ``Runner(grid)``, which loads the grid's model and SAEs by name).
    """

    def __init__(self, grid, make_runner=None, threads: int = 1):
        import torch

        torch.set_num_threads(threads)
        if make_runner is None:
            from .grid import Runner

            self.runner = Runner(grid, progress=False)
        else:
            self.runner = make_runner(grid)

    def pid(self) -> int:
        return os.getpid()

    def run(self, shard):
        """Evaluate ``shard`` group by group (a condition alone, or the strengths of one vector that an item runs
        in one batch), yielding ``(condition, row, texts)`` as each finishes (a Ray streaming generator: the
        driver sees each row at once)."""
        for group in self.runner.groups(shard):
            got = []
            self.runner.run(group, on_row=lambda row, texts: got.append((row, texts)))
            for c, (row, texts) in zip(group, got):
                yield c, row, texts


def ray_executor(address: str | None = None, workers: int | None = None, threads_per_worker: int = 1,
                 max_attempts: int = 3, make_runner=None, runtime_env: dict | None = None):
    """An ``executor(grid, shards, on_row)`` for :func:`~sas.runs.grid.run_grid` that runs on Ray.

    ``address`` as :func:`connect`; ``workers`` actors (default: as many as the cluster's CPUs allow at
    ``threads_per_worker`` CPUs each, at most one per shard); a shard whose actor dies is retried on a new
    actor up to ``max_attempts`` times in all. ``make_runner(grid)``, picklable, builds each actor's runner
    (default: the grid's model and SAEs by name).
    """

    def execute(grid, shards, on_row) -> None:
        ray = _import_ray()
        connect(address, runtime_env=runtime_env)
        actor_cls = ray.remote(num_cpus=threads_per_worker, max_restarts=0)(ShardWorker)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(len(shards), workers or max(1, cpus // threads_per_worker)))
        run_id = uuid.uuid4().hex[:8]
        died = (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.NodeDiedError)
        made = [0]

        def new_actor():
            made[0] += 1  # named, so `ray list actors` (and the tests) can find them
            return actor_cls.options(name=f"sas-worker-{run_id}-{made[0]}").remote(grid, make_runner,
                                                                                  threads_per_worker)

        idle = [new_actor() for _ in range(n)]
        queue = deque((i, list(s)) for i, s in enumerate(shards))
        attempts = {i: 0 for i in range(len(shards))}
        written = set()
        running = {}  # streaming generator -> (actor, shard index, conditions)
        try:
            while queue or running:
                while idle and queue:
                    i, shard = queue.popleft()
                    todo = [c for c in shard if c not in written]
                    if not todo:
                        continue
                    attempts[i] += 1
                    actor = idle.pop()
                    running[actor.run.remote(todo)] = (actor, i, todo)
                ready, _ = ray.wait(list(running), num_returns=1)
                gen = ready[0]
                actor, i, todo = running[gen]
                try:
                    c, row, texts = ray.get(next(gen))
                except StopIteration:
                    del running[gen]
                    idle.append(actor)
                    continue
                except died as e:  # the process or its node died, or Ray's memory monitor killed it: retry the rest
                    del running[gen]
                    ray.kill(actor)  # if it still runs (an OOM-killed task leaves the actor), it takes no more work
                    if getattr(e, "actor_init_failed", False):  # building the runner raised: every retry would
                        raise RuntimeError(f"the Ray workers could not build their runner (model, SAEs): {e}") from e
                    left = [c for c in todo if c not in written]
                    if attempts[i] >= max_attempts:
                        raise RuntimeError(f"shard {i} ({len(left)} condition(s) left, first {left[0]}) failed "
                                           f"{attempts[i]} times on Ray; the last error: {e}") from e
                    queue.appendleft((i, left))
                    idle.append(new_actor())
                    continue
                if c not in written:  # a retried condition that had finished is not written twice
                    written.add(c)
                    on_row(row, texts)
        finally:
            for actor in idle + [a for a, _, _ in running.values()]:
                ray.kill(actor)  # also ends its running task: an interrupted driver leaves no work behind

    return execute


def wait_for_actors(prefix: str = "sas-worker-", n: int = 1, timeout: float = 300.0) -> list[str]:
    """Names of live sas worker actors once at least ``n`` exist (for monitoring and tests)."""
    from ray.util import list_named_actors

    t0 = time.time()
    while time.time() - t0 < timeout:
        names = [a for a in list_named_actors() if a.startswith(prefix)]
        if len(names) >= n:
            return names
        time.sleep(0.2)
    raise TimeoutError(f"fewer than {n} actor(s) named {prefix}* after {timeout:.0f} s")
