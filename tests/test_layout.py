"""The package layout: old import paths still work (one release), import sas stays light, and no module
imports from a later stage of the pipeline."""

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sas._shims import MOVED

ORDER = ["hooks", "load", "concepts", "forward", "activations", "training", "steering", "export", "methods", "evaluation", "runs",
         "reports", "serve", "cli"]
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


def test_import_sas_is_light():
    code = "import sys, sas; print(sorted(m for m in ('torch', 'pandas', 'transformer_lens', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _stage(module: str) -> int:
    part = module.split(".")[0]
    return ORDER.index(part) if part in ORDER else -1


@pytest.mark.parametrize("path", sorted(p for p in SAS.rglob("*.py") if p.parent != SAS or p.stem in ORDER),
                         ids=lambda p: str(p.relative_to(SAS)))
def test_no_module_imports_a_later_stage(path):
    rel = path.relative_to(SAS).with_suffix("")
    here = _stage(".".join(rel.parts))
    pkg = rel.parts[:-1] if rel.name != "__init__" else rel.parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = list(pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg)
            target = ".".join(base + ([node.module] if node.module else []))
            assert _stage(target) <= here, f"{rel} ({ORDER[here]}) imports {target} (a later stage)"


@pytest.mark.slow
def test_shipped_saes_load_after_a_plain_pip_install(tmp_path):
    """`pip install .` (not editable) carries saes/ as sas/_saes, and load_sae finds and checks them there."""
    root = SAS.parent
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(tmp_path / "site"), str(root)], check=True, capture_output=True, cwd=tmp_path)
    code = ("import sas.load.saes as s; from sas.load.saes import registry, load_sae; "
            "assert 'site' in s.__file__, s.__file__; "
            "print(s.SAE_DIR.name, len(registry()), load_sae('gemma-3-270m-L5-4k').cfg.d_sae)")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["_saes", "3", "4096"]
