"""The `sas` command: help, argument errors, bad input caught before the model loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import sas.cli
import sas.load.models
from sas.cli import main


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command loads a model: these errors must come first, in a second."""
    monkeypatch.setattr(sas.load.models, "load_model", lambda *a, **k: pytest.fail("loaded a model"))


def _exit(argv, capsys) -> tuple[int | str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    cap = capsys.readouterr()
    return e.value.code, cap.out + cap.err


def test_console_script_help():
    exe = Path(sys.executable).with_name("sas")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for cmd in ("sweep", "vectors", "generate"):
        assert cmd in r.stdout


@pytest.mark.parametrize("cmd, words", [
    ("sweep", ["--behavior", "--layers", "--multipliers", "--out", "--task", "resume"]),
    ("vectors", ["--behavior", "--pairs", "--positive", "--negative", "--out"]),
    ("generate", ["--vector", "--multipliers", "--prompt", "--max-new-tokens"]),
])
def test_subcommand_help(cmd, words, capsys):
    code, text = _exit([cmd, "--help"], capsys)
    assert code == 0
    for w in words:
        assert w in text


def test_no_command(capsys):
    code, text = _exit([], capsys)
    assert code == 2 and "required" in text


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--behavior", "sycophancy", "--layers", "2,x"], "expected comma-separated integers such as 2,4,6"),
    (["sweep", "--behavior", "sycophancy", "--multipliers", "1,two"], "expected comma-separated numbers"),
    (["sweep", "--task", "poetry"], "unknown task(s) poetry; choose from sentiment, topic, a shipped concept (animals, "),
    (["sweep", "--method", "cca"], "unknown method(s) cca; choose from actadd, caa, "),
    (["sweep", "--dtype", "float8"], "invalid choice: 'float8'"),
])
def test_argument_errors(argv, message, capsys, no_model):
    code, text = _exit(argv, capsys)
    assert code == 2
    assert message in text and "usage: sas sweep" in text


@pytest.mark.parametrize("argv", [["bench", "--n-tune", "0"], ["bench", "--batch-size", "0"],
                                  ["bench", "--n-test", "-3"], ["sweep", "--behavior", "sycophancy", "--n-prompts", "0"]])
def test_counts_of_zero_are_refused_not_replaced(argv, capsys, no_model):
    code, text = _exit(argv, capsys)
    assert code == 2 and f"{argv[-2]}: expected a whole number of at least 1, not '{argv[-1]}'" in text


def test_bench_counts_are_checked_in_the_library_too():
    from sas.runs.bench import bench

    with pytest.raises(ValueError, match="batch_size must be a whole number of at least 1, not 0"):
        bench(None, {5: "gemma-3-270m-L5-4k"}, ["weddings"], batch_size=0)


def test_unknown_behavior_before_loading_the_model(capsys, no_model, tmp_path):
    code, text = _exit(["sweep", "--behavior", "sycophancy,flattery", "--out", str(tmp_path / "r.jsonl")], capsys)
    assert code == 2 and "unknown behavior(s) flattery" in text and "sycophancy" in text and "or all" in text
    assert not (tmp_path / "r.jsonl").exists()


def test_sweep_needs_a_behavior_or_a_task(capsys, no_model):
    code, _ = _exit(["sweep"], capsys)
    assert "give --behavior NAME" in str(code)


def test_negative_multipliers_parse(monkeypatch):
    seen = {}
    monkeypatch.setattr(sas.cli, "cmd_sweep", lambda args: seen.update(vars(args)))
    main(["sweep", "--behavior", "sycophancy", "--multipliers", "-2,-1,0,1.5", "--layers", "3"])
    assert seen["multipliers"] == [-2.0, -1.0, 0.0, 1.5] and seen["layers"] == [3]
    if hasattr(sas.cli, "cmd_compare"):
        monkeypatch.setattr(sas.cli, "cmd_compare", lambda args: seen.update(vars(args)))
        main(["compare", "--behavior", "sycophancy", "--multipliers", "-1,1", "--sas-multipliers", "-4,4"])
        assert seen["multipliers"] == [-1.0, 1.0] and seen["sas_multipliers"] == [-4.0, 4.0]


def test_generate_needs_a_prompt(capsys, monkeypatch):
    monkeypatch.setattr(sas.cli, "_model", lambda args: object())
    code, _ = _exit(["generate"], capsys)
    assert "give --prompt TEXT" in str(code)


def test_generate_missing_vector(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sas.cli, "_model", lambda args: object())
    code, _ = _exit(["generate", "--prompt", "Hi", "--vector", str(tmp_path / "nope.safetensors")], capsys)
    assert str(code).startswith("sas generate: error: no steering vector at") and "sas vectors" in str(code)
