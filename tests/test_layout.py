"""The package layout: old import paths still work (one release), import sas stays light, and every import
between the folders of sas/ is one the dependency table below allows."""

import ast
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sas._shims import MOVED
from sas.load.saes import select_saes

SAS = Path(__file__).resolve().parents[1] / "sas"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_paths_import_with_a_deprecation_warning(old):
    sys.modules.pop(f"sas.{old}", None)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        module = __import__(f"sas.{old}", fromlist=["x"])
    assert any(issubclass(w.category, DeprecationWarning) and "moved to" in str(w.message) for w in seen)
    public = [n for n in vars(module) if not n.startswith("_")]
    assert public, f"sas.{old} is empty"


def test_old_names_are_the_new_objects():
    import sas.caa
    import sas.sparse
    import sas.sweep
    from sas.activations.residual import answer_activations
    from sas.methods.caa import caa_vector
    from sas.runs.store import read_rows
    from sas.steering.sparse import SparseVector

    assert sas.caa.caa_vector is caa_vector and sas.caa.answer_activations is answer_activations
    assert sas.sparse.SparseVector is SparseVector and sas.sweep.read_rows is read_rows


@pytest.mark.parametrize("module, name, new", [
    ("sas.reports.features", "feature_table", "sas.evaluation.features"),
    ("sas.reports.features", "logit_effects", "sas.evaluation.features"),
    ("sas.reports.dashboard", "feature_cache", "sas.activations.feature_cache"),
    ("sas.reports.dashboard", "vector_contrast", "sas.evaluation.features")])
def test_names_that_left_reports_still_import_with_a_warning(module, name, new):
    """reports/ only formats: what it computed moved a floor down, and the old names keep working for one release."""
    import importlib

    with pytest.warns(DeprecationWarning, match=f"{module}.{name} moved to"):
        old = getattr(importlib.import_module(module), name)
    assert old is getattr(importlib.import_module(new), name)


def test_import_sas_is_light():
    code = "import sys, sas; print(sorted(m for m in ('torch', 'pandas', 'transformer_lens', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# The dependency table: which folders (and top-level modules) of sas/ each one may import, besides itself and
# BASE. Anything not listed is refused, siblings included (evaluation may not import methods, serve may not
# import runs). Adding a folder is adding a row; a new dependency is a word in its row. Derived from the imports
# of the code as it is (`python -m pytest tests/test_layout.py -q` names every import the table refuses).
BASE = {"hooks", "checks", "_registry", "files", "hashing"}  # small shared modules every folder may use; they import nothing of sas
EVERYTHING = "*"
ALLOWED = {
    "hooks": set(), "checks": set(), "_registry": set(), "files": set(), "hashing": set(),
    "load": set(),
    "forward": {"load"},
    "concepts": {"load"},  # concept files and their scorers
    "activations": {"load", "forward"},
    "steering": {"load", "forward", "activations"},  # strength.py measures residual norms
    "export": {"load", "steering"},
    "training": {"load", "forward"},  # sas train-sae: streams the model's residuals into SAEs
    "methods": {"load", "forward", "activations", "steering"},
    "evaluation": {"load", "forward", "activations", "steering", "concepts"},
    "serve": {"load", "forward", "steering"},
    "runs": {"load", "forward", "activations", "steering", "concepts", "methods", "evaluation", "export"},
    "reports": {"load", "concepts", "evaluation", "runs", "steering"},  # formats; stats from evaluation, a task's pairs
    "cli": EVERYTHING,
    "__init__": EVERYTHING, "_shims": EVERYTHING,  # the package's face: names imported lazily, old paths
}
# Imports today's code makes that the table refuses (one file and one folder each); delete the line when the code
# moves (a line no import needs fails the test).
EXCEPTIONS: dict[tuple[str, str], str] = {}


def _is_module(name: str) -> bool:
    path = SAS.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(source: str, module: str) -> set[str]:
    """The sas modules that ``source`` (the text of module ``module``, e.g. ``sas.runs.grid``) imports: absolute and
    relative imports, anywhere in the file (lazy ones too), and plugin imports named by a string (the registries'
    ``Registry("method", "sas.methods")``, the CLI's ``EXTRA_COMMANDS``, ``importlib.import_module("sas...")``)."""
    package = module.split(".") if module.endswith("__init__") else module.split(".")[:-1]
    package = [p for p in package if p != "__init__"]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join((package[: len(package) - node.level + 1] if node.level else [])
                            + ([node.module] if node.module else []))
            named = {f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}")}
            found |= named if named and not node.module else named | {base}  # from . import x: x, not .
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and re.fullmatch(r"sas(\.\w+)+", node.value) and _is_module(node.value)):
            found.add(node.value)
    return {m for m in found if m.split(".")[0] == "sas"}


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _sources() -> list[Path]:
    return sorted(p for p in SAS.rglob("*.py") if "_saes" not in p.relative_to(SAS).parts)


def _module(path: Path) -> str:
    return ".".join(("sas", *path.relative_to(SAS).with_suffix("").parts))


def test_every_folder_has_a_row_and_the_table_has_no_cycle():
    folders = {_folder(_module(p)) for p in _sources()}
    assert folders == set(ALLOWED), f"rows missing: {folders - set(ALLOWED)}, rows for nothing: {set(ALLOWED) - folders}"
    for name, deps in ALLOWED.items():
        assert deps == EVERYTHING or deps <= set(ALLOWED), f"{name} lists unknown folders {deps - set(ALLOWED)}"
    assert "methods" not in ALLOWED["evaluation"] and "runs" not in ALLOWED["serve"]  # siblings stay apart

    def reach(name, path=()):
        assert name not in path, f"the table has a cycle: {' -> '.join(path + (name,))}"
        for dep in ALLOWED[name] | (BASE if name not in BASE else set()):
            reach(dep, path + (name,))

    for name, deps in ALLOWED.items():
        if deps != EVERYTHING:
            reach(name)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SAS)))
def test_imports_follow_the_table(path):
    here, rel = _folder(_module(path)), str(path.relative_to(SAS))
    if ALLOWED[here] == EVERYTHING:
        return
    for target in sorted({_folder(m) for m in imports(path.read_text(), _module(path))} - {here}):
        if target not in ALLOWED[here] | BASE and (rel, target) not in EXCEPTIONS:
            pytest.fail(f"sas/{rel} ({here}) imports {target}, which the table in tests/test_layout.py does not "
                        f"allow: move the code, or add {target!r} to ALLOWED[{here!r}] if the dependency is sound")


def test_every_exception_is_still_needed():
    used = {(str(p.relative_to(SAS)), _folder(m)) for p in _sources() for m in imports(p.read_text(), _module(p))}
    assert not set(EXCEPTIONS) - used, f"no import needs these exceptions any more: {set(EXCEPTIONS) - used}"


def test_hashlib_is_used_in_one_module():
    """Every hash sas computes comes from sas/hashing.py: no second way to hash one thing."""
    users = [str(p.relative_to(SAS)) for p in _sources() if re.search(r"^\s*(import|from) hashlib", p.read_text(), re.M)]
    assert users == ["hashing.py"], users


def test_imports_reads_every_kind_of_import():
    source = """
import os
import sas.methods.caa
from sas.evaluation import stats
from ...steering.vector import SteeringVector
from ... import concepts
from .. import bench
def later():
    from ...hooks import resid_hook
    importlib.import_module("sas.serve.cli")
_METHODS = Registry("method", "sas.methods")
KEY = "sas.format"  # a string that names no module
"""
    found = imports(source, "sas.reports.dashboard.pages")
    assert {_folder(m) for m in found} == {"methods", "evaluation", "steering", "concepts", "reports", "hooks",
                                              "serve"}
    assert "sas.reports.bench" in found and "sas.methods.caa" in found
    assert imports("from .. import concepts", "sas.runs.grid") == {"sas.concepts"}
    assert imports("from . import _shims", "sas.__init__") == {"sas._shims"}
    assert imports("from . import vector", "sas.steering.__init__") == {"sas.steering.vector"}


@pytest.mark.slow
def test_shipped_saes_load_after_a_plain_pip_install(tmp_path):
    """`pip install .` (not editable) carries saes/ as sas/_saes, and load_sae finds and checks them there."""
    root = SAS.parent
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(tmp_path / "site"), str(root)], check=True, capture_output=True, cwd=tmp_path)
    code = ("import sas.load.saes as s; from sas.load.saes import registry, load_sae; "
            "assert 'site' in s.__file__, s.__file__; "
            "print(s.SAE_DIR.name, ','.join(sorted(registry())), load_sae('gemma-3-270m-L5-4k').cfg.d_sae, "
            "[load_sae(n).cfg.d_sae for n in s.select_saes('gemma-3-270m')])")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    cards = sorted(c.stem for c in (root / "saes").glob("*.json"))
    widths = [json.loads((root / "saes" / f"{n}.json").read_text())["width"] for n in select_saes("gemma-3-270m")]
    assert out.stdout.strip().split(maxsplit=3) == ["_saes", ",".join(cards), "4096", str(widths)]  # every card, the defaults
