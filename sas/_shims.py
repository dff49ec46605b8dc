"""Old import paths (sas 0.1's ``sas.caa``, ``sas.sparse``, ``sas.sweep``, ..., and modules moved since, such as
``sas.activations.effects``), kept for one release.

Each old module is built on import from the modules its contents moved to, with a
``DeprecationWarning`` that names the new path. Remove this file in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

MOVED = {
    "activations.effects": ["steering.effects"],
    "activations.output_scores": ["steering.output_scores"],
    "actadd": ["methods.actadd"],
    "caa": ["methods.caa", "activations.residual"],
    "compare": ["runs.compare", "reports.plots"],
    "datasets": ["load.data"],
    "evaluate": ["evaluation.ab", "evaluation.side_effects"],
    "evaluation.tasks": ["concepts.tasks", "evaluation.concept"],
    "features": ["evaluation.features", "reports.features"],
    "generation": ["forward.run", "forward.generate", "forward.likelihood"],
    "models": ["load.models"],
    "plots": ["reports.plots"],
    "prompts": ["load.prompts"],
    "reports.dashboard.cache": ["activations.feature_cache"],
    "reports.dashboard.contrast": ["evaluation.features"],
    "reports.selection": ["runs.selection"],
    "sae": ["load.saes", "activations.codes", "activations.residual", "evaluation.sae_quality"],
    "sparse": ["steering.sparse", "methods.sas"],
    "sweep": ["runs.sweep", "runs.store", "reports.tables"],
    "tasks": ["concepts.tasks", "evaluation.concept", "runs.vectors"],
    "vector": ["steering.vector"],
}


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        return types.ModuleType(spec.name)

    def exec_module(self, module):
        old = module.__name__.removeprefix("sas.")
        targets = [f"sas.{t}" for t in MOVED[old]]
        warnings.warn(f"sas.{old} moved to {', '.join(targets)}; the old path goes in sas 0.3",
                      DeprecationWarning, stacklevel=3)
        for t in reversed(targets):  # the first target wins a name clash
            m = importlib.import_module(t)
            module.__dict__.update({k: v for k, v in vars(m).items() if not k.startswith("__")})
        module.__doc__ = f"Deprecated alias of {', '.join(targets)}."


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("sas.") and fullname.removeprefix("sas.") in MOVED:
            return importlib.util.spec_from_loader(fullname, _Loader())
        return None


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
