"""The README and the documentation site: the site builds with warnings as errors, every relative link and
repository path they name exists, every `sas <command>` they name is a command of the CLI, and no user-facing
text (README, docs/, the READMEs users read, CLI help, docstrings) cites the project's tracker."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "saes" / "README.md",
          ROOT / "benchmarks" / "README.md"]  # written by hand, not generated reports
USER_TEXT = [*PAGES, ROOT / "mkdocs.yml", ROOT / "saes" / "README.md", *sorted((ROOT / "sas").rglob("*.py")),
             *sorted((ROOT / "sas" / "data").rglob("README.md")), *sorted((ROOT / "scripts").glob("*.py")),
             *sorted(p for p in (ROOT / "benchmarks").glob("*") if p.suffix in (".py", ".md", ".json")),
             *sorted((ROOT / "notebooks").glob("*"))]
TRACKER = re.compile(r"\b(?i:issues?|tickets?|pull requests?)\s*#?\d+|\bPRs? ?#\d+")
REPO_PATH = re.compile(r"(?<![\w./~$-])((?:sas|docs|saes|scripts|benchmarks|notebooks|tests|\.ci)/[\w./-]*\w/?)")
MADE_BY_THE_READER = {"sas/methods/mean_of_positives.py",  # the example of adding a method
                      "benchmarks/.venvs/"}  # the peers' environments, made by the first benchmark run
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason='mkdocs is not installed: pip install -e ".[docs]" to build the documentation site')
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").read_text().count("doc-heading") > 20  # the API reference


@pytest.mark.parametrize("path", USER_TEXT, ids=_rel)
def test_no_tracker_numbers_in_user_facing_text(path):
    hits = [f"{_rel(path)}:{i}: {m.group(0)}" for i, line in enumerate(path.read_text().splitlines(), 1)
            for m in TRACKER.finditer(line)]
    assert not hits, "users cannot see the project's tracker; say what the change is instead:\n" + "\n".join(hits)


def test_the_tracker_check_catches_a_citation():
    assert TRACKER.search("Other ways to pick them (issue 11)") and TRACKER.search("see Issues #3, #4")
    assert TRACKER.search("fixed in PR #12") and not TRACKER.search("iVBORw0KGgoPr9")  # not inside base64
    assert not TRACKER.search("the magazine's issue") and not TRACKER.search("sas bench --n-test 100")


@pytest.mark.parametrize("path", PAGES, ids=_rel)
def test_relative_links_exist(path):
    text = FENCE.sub("", path.read_text())
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:|#", target):
            continue
        assert (path.parent / target.split("#")[0]).exists(), f"{_rel(path)} links to {target}, which is missing"


@pytest.mark.parametrize("path", GUIDES, ids=_rel)
def test_repository_paths_named_exist(path):
    text = path.read_text()
    missing = sorted({p for p in REPO_PATH.findall(text) if "<" not in p and not p.startswith(tuple(MADE_BY_THE_READER))
                      and not (ROOT / p).exists()})
    assert not missing, f"{_rel(path)} names paths that do not exist: {missing}"


def _cli_commands() -> set[str]:
    from sas.cli import parser

    sub = next(a for a in parser()._actions if a.dest == "command")
    return set(sub.choices)


def _sas_commands(text: str) -> set[str]:
    """The subcommands in ``sas <command>`` lines of shell blocks and in inline code."""
    found = set(re.findall(r"`sas ([a-z][\w-]*)", text))
    for lang, body in FENCE.findall(text):
        if lang in ("", "bash", "sh", "console"):
            found |= set(re.findall(r"(?:^|[;&|]\s*|\$ )sas ([a-z][\w-]*)", body, re.MULTILINE))
    return found


@pytest.mark.parametrize("path", GUIDES, ids=_rel)
def test_sas_commands_named_exist(path):
    unknown = _sas_commands(path.read_text()) - _cli_commands()
    assert not unknown, f"{_rel(path)} names `sas` commands the CLI does not have: {sorted(unknown)}"


def test_the_command_check_reads_blocks_and_inline_code():
    text = "Run `sas bench --quick`.\n\n```bash\npip install -e . && sas sweep --x 1\nsas serve\n```\n"
    assert _sas_commands(text) == {"bench", "sweep", "serve"}
    assert "bench" in _cli_commands() and "serve" in _cli_commands() and "frobnicate" not in _cli_commands()


@pytest.mark.parametrize("path", GUIDES, ids=_rel)
def test_python_modules_named_exist(path, monkeypatch):
    """`python -m X` in the README and the pages runs a module that is there (from the repository's root)."""
    monkeypatch.syspath_prepend(str(ROOT))
    modules = set(re.findall(r"python3? -m ([\w.]+)", path.read_text())) - {"venv", "pip"}
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    assert not missing, f"{_rel(path)} runs modules that do not exist: {missing}"
