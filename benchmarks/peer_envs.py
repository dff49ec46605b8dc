"""The environments the peer libraries run in, made on first use by the benchmark command.

Their pins clash with sas's (torch 2.13, transformers 5, numpy 2):

- ``steering-vectors`` 0.12.2 asks for ``transformers<5`` but runs unchanged on transformers 5.23: its code
  only registers forward hooks on ``model.layers.{n}`` and calls ``model(**inputs)``. It is installed with
  ``--no-deps`` (``tests/test_peers.py`` shows its CAA vectors equal sas's on gemma-3-270m). If the running
  environment already has it (``.ci/run`` installs it), that is used; otherwise it is installed with
  ``pip install --no-deps --target benchmarks/.venvs/steering-vectors`` and put on the child's ``PYTHONPATH``.
- ``repeng`` 0.4.0 cannot: it evaluates ``np.float_`` at import time, which numpy 2 removed. It gets its own
  virtual environment, ``benchmarks/.venvs/repeng``, with the CPU torch 2.13.0 and the same transformers
  5.23.0 as sas (so the model code is the same) and ``numpy==1.26.4``.

Both load the same fp32 Hugging Face folder that ``sas.models.converted_model_dir`` made.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

VENVS = Path(__file__).resolve().parent / ".venvs"

SV_NO_DEPS = ["steering-vectors==0.12.2", "scikit-learn==1.9.1", "threadpoolctl==3.8.0"]
REPENG_VENV = ["repeng==0.4.0", "numpy==1.26.4", "transformers==5.23.0", "scikit-learn==1.7.2", "gguf==0.19.0",
               "safetensors>=0.4", "tqdm>=4.66"]
VERSIONS = ("import importlib.metadata as m, json, sys; print(json.dumps({p: m.version(p) for p in "
            "sys.argv[1:]}))")


def _pip(python: str, *args: str) -> None:
    r = subprocess.run([python, "-m", "pip", "install", "-qq", "--disable-pip-version-check", *args],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(args)} failed:\n{r.stderr[-3000:]}")


def _steering_vectors() -> tuple[str, dict]:
    if importlib.util.find_spec("steering_vectors") and importlib.util.find_spec("sklearn"):
        return sys.executable, {}
    target = VENVS / "steering-vectors"
    stamp = target / "sas_pins.json"
    if not stamp.exists() or json.loads(stamp.read_text()) != SV_NO_DEPS:
        print(f"  making {target}: pip install --no-deps {' '.join(SV_NO_DEPS)}", flush=True)
        _pip(sys.executable, "--no-deps", "--target", str(target), *SV_NO_DEPS)
        stamp.write_text(json.dumps(SV_NO_DEPS))
    return sys.executable, {"PYTHONPATH": str(target)}


def _repeng() -> tuple[str, dict]:
    root = VENVS / "repeng"
    python = str(root / "bin" / "python")
    stamp = root / "sas_pins.json"
    if not stamp.exists() or json.loads(stamp.read_text()) != REPENG_VENV:
        print(f"  making the virtual environment {root} (torch 2.13.0 first, then {' '.join(REPENG_VENV)})",
              flush=True)
        venv.create(root, with_pip=True, clear=True)
        _pip(python, "torch==2.13.0")  # the CPU build first, so no CUDA build gets pulled
        _pip(python, *REPENG_VENV)
        stamp.write_text(json.dumps(REPENG_VENV))
    return python, {}


PEERS = {"steering-vectors": _steering_vectors, "repeng": _repeng, "hf": lambda: (sys.executable, {})}
PACKAGES = {"steering-vectors": ["steering-vectors", "transformers", "torch", "numpy"],
            "repeng": ["repeng", "transformers", "torch", "numpy", "scikit-learn"], "hf": ["transformers", "torch"]}
_ready: dict[str, tuple[str, dict, dict]] = {}


def peer_env(peer: str) -> tuple[str, dict, dict]:
    """``(python, environment variables, versions)`` to run ``benchmarks/peers.py`` for ``peer``;
    makes the environment the first time."""
    if peer not in _ready:
        python, extra = PEERS[peer]()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **extra}
        r = subprocess.run([python, "-c", VERSIONS, *PACKAGES[peer]], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"the {peer} environment is broken:\n{r.stderr[-2000:]}")
        versions = json.loads(r.stdout)
        versions["how"] = ("the benchmark's own virtual environment" if peer == "repeng" else
                           "sas's environment" + (", installed with --no-deps" if peer == "steering-vectors" else ""))
        _ready[peer] = (python, env, versions)
    return _ready[peer]


def versions() -> dict:
    """The versions of the peer environments made so far in this process."""
    return {p: v for p, (_, _, v) in _ready.items()}
