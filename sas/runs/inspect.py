"""The sparse vectors a benchmark built, found again for the reports that describe them (``sas bench``'s
``features.md``)."""

from __future__ import annotations

from ..methods.registry import get_method
from .grid import Runner
from .store import ResultStore


def sae_space_vectors(result, model=None, saes: dict | None = None):
    """``(runner, [(concept, method, layer, vector or the exception that stopped it)])`` for every steered
    condition of an SAE-space method in ``result`` (a :class:`~sas.runs.bench.BenchResult` of ``bench(...,
    out=FILE)``), read from that file's vector cache."""
    if result.grid is None or not result.settings.get("out"):
        raise ValueError("write_features needs a BenchResult from bench(..., out=FILE): it reads the vectors built "
                         "for that file")
    runner = Runner(result.grid, model, saes, vector_dir=ResultStore(result.settings["out"], "concept").vector_dir,
                    progress=False)
    seen = sorted({(r["concept"], r["method"], int(r["layer"])) for r in result.tuning + result.test
                   if r and float(r["multiplier"]) != 0 and get_method(r["method"]).needs_sae})
    return runner, [(c, m, layer, runner.vector(c, m)) for c, m, layer in seen]
