"""The grid runner and the results store: resume keys that hold every setting, torn lines, old files,
registries, shards, and that a finished run never loads the model."""

import json

import pytest
import torch
from test_sparse import LAYER, random_sae

import sas
import sas.evaluation.ab
from sas.methods.registry import build_vector, get_method, methods
from sas.runs.grid import Condition, Grid, Runner, run_grid
from sas.runs.store import ResultStore, read_rows
from sas.runs.sweep import ab_sweep, task_sweep

SAS = {"sas": [0.0, 4.0]}


def _sas_sweep(tiny, out, **settings):
    sae = random_sae()
    return ab_sweep(tiny, ["sycophancy"], [LAYER], SAS["sas"], method="sas", out=out, n_test=2,
                    saes={LAYER: sae}, settings=settings, progress=False)


@pytest.mark.slow  # tiny model, but minutes of CPU: out of the fast lane
def test_rerun_with_another_tau_adds_rows_and_returns_only_its_own(tiny, tmp_path):
    out = tmp_path / "s.jsonl"
    a = _sas_sweep(tiny, out, tau=0.1)
    b = _sas_sweep(tiny, out, tau=0.3)
    rows = read_rows(out)
    assert len(rows) == 4 and sorted({r["tau"] for r in rows}) == [0.1, 0.3]
    assert set(a.tau) == {0.1} and set(b.tau) == {0.3}
    steered = lambda df: df[df.multiplier == 4.0].iloc[0]  # noqa: E731
    assert steered(a).cos_caa != steered(b).cos_caa  # a different vector, not the old row
    again = _sas_sweep(tiny, out, tau=0.1)  # resumes: nothing new
    assert len(read_rows(out)) == 4 and again.p_match.tolist() == a.p_match.tolist()


def test_rerun_with_another_seed_adds_rows(tiny, tmp_path):
    out = tmp_path / "t.jsonl"
    vec = {"actadd": sas.actadd_vector(tiny, "Love", "Hate", [1], behavior="sentiment")}
    kw = dict(out=out, n_prompts=2, max_new_tokens=3, vectors=vec, progress=False)
    a = task_sweep(tiny, "sentiment", ["actadd"], [1], {"actadd": [2.0]}, seed=0, **kw)
    b = task_sweep(tiny, "sentiment", ["actadd"], [1], {"actadd": [2.0]}, seed=1, **kw)
    assert len(read_rows(out)) == 2 and a.seed.tolist() == [0] and b.seed.tolist() == [1]
    texts = read_rows(out.with_name("t.texts.jsonl"))
    assert [t["seed"] for t in texts] == [0, 1] and texts[0]["texts"] != texts[1]["texts"]


def test_other_n_test_and_model_settings_are_new_rows(tiny, tmp_path):
    out = tmp_path / "n.jsonl"
    vec = {"sycophancy": sas.actadd_vector(tiny, "a", "b", [1])}
    ab_sweep(tiny, ["sycophancy"], [1], [1.0], out=out, n_test=2, vectors=vec, progress=False)
    df = ab_sweep(tiny, ["sycophancy"], [1], [1.0], out=out, n_test=3, vectors=vec, progress=False)
    assert df.n.tolist() == [3] and len(read_rows(out)) == 2
    df = ab_sweep(tiny, ["sycophancy"], [1], [1.0], out=out, n_test=3, vectors=vec, progress=False,
                  with_side_effects=False, balance=False)
    assert len(read_rows(out)) == 3 and df.balance.tolist() == [False]


def test_torn_last_line_is_reported_repaired_and_redone(tiny, tmp_path):
    out = tmp_path / "torn.jsonl"
    vec = {"sycophancy": sas.actadd_vector(tiny, "a", "b", [1])}
    kw = dict(out=out, n_test=2, vectors=vec, progress=False)
    ab_sweep(tiny, ["sycophancy"], [1], [1.0, 2.0], **kw)
    text = out.read_text()
    out.write_text(text[: len(text) - 25])  # the process died in the middle of the second row
    with pytest.warns(UserWarning, match=r"torn\.jsonl:2: a torn row"):
        df = ab_sweep(tiny, ["sycophancy"], [1], [1.0, 2.0], **kw)
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x) for x in lines)  # repaired: every line is JSON again
    assert sorted(df.multiplier) == [1.0, 2.0]


def test_a_malformed_middle_line_or_a_foreign_file_is_refused(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model": "m", "method": "caa", "behavior": "x", "layer": 1, "multiplier": 1}\n{oops\n{}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: malformed JSON"):
        ResultStore(bad, "ab")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"question": "q", "answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}\n')
    with pytest.raises(ValueError, match="not a sas result row"):
        ResultStore(pairs, "ab")
    tasks = tmp_path / "task.jsonl"
    tasks.write_text('{"model": "m", "method": "caa", "task": "sentiment", "layer": 1, "multiplier": 1}\n')
    with pytest.raises(ValueError, match="holds task results, not behavior results"):
        ResultStore(tasks, "ab")


def test_rows_of_sas_0_1_still_resume(tiny, tmp_path):
    """A 0.1 row (no dtype, seed, data hash, n_test, ...) reads as the defaults it was made with."""
    out = tmp_path / "old.jsonl"
    old = {"model": "tiny", "method": "caa", "behavior": "sycophancy", "layer": 1, "multiplier": 1.0,
           "p_match": 0.123, "p_match_raw": 0.1, "p_a": 0.5, "n": 2, "seconds": 1.0}
    out.write_text(json.dumps(old) + "\n")
    vec = {"sycophancy": sas.actadd_vector(tiny, "a", "b", [1])}
    df = ab_sweep(tiny, ["sycophancy"], [1], [1.0], out=out, n_test=2, vectors=vec, progress=False)
    assert df.p_match.tolist() == [0.123] and len(read_rows(out)) == 1
    ab_sweep(tiny, ["sycophancy"], [1], [1.0], out=out, n_test=3, vectors=vec, progress=False)  # n differs
    assert len(read_rows(out)) == 2


@pytest.mark.slow  # tiny model, but minutes of CPU: out of the fast lane
def test_runners_return_rows_without_a_file_and_finished_runs_load_nothing(tiny, tmp_path, monkeypatch):
    vec = {"sycophancy": sas.actadd_vector(tiny, "a", "b", [1])}
    df = ab_sweep(tiny, ["sycophancy"], [1], [0.0, 1.0], out=None, n_test=2, vectors=vec, progress=False)
    assert len(df) == 2 and df.p_match.notna().all()
    grid = Grid("ab", ["sycophancy"], ["caa"], [1], {"caa": [0.0, 1.0]}, "tiny", eval_settings={"n_test": 2})
    out = tmp_path / "g.jsonl"
    run_grid(grid, out, model=tiny, progress=False)
    # a finished grid, run again without a model: no model load, no activations, the same rows
    monkeypatch.setattr("sas.load.models.load_model", lambda *a, **k: pytest.fail("loaded the model"))
    monkeypatch.setattr(sas.evaluation.ab.ABScorer, "score", lambda *a, **k: pytest.fail("scored again"))
    grid2 = Grid("ab", ["sycophancy"], ["caa"], [1], {"caa": [0.0, 1.0]}, "tiny", "float32",
                 eval_settings={"n_test": 2})
    rows = run_grid(grid2, out, progress=False)
    assert [r["multiplier"] for r in rows] == [0.0, 1.0]


@pytest.mark.slow  # tiny model, but minutes of CPU: out of the fast lane
def test_the_cached_vector_is_keyed_by_its_settings(tiny, tmp_path):
    out = tmp_path / "v.jsonl"
    _sas_sweep(tiny, out, tau=0.1)
    _sas_sweep(tiny, out, tau=0.3)
    files = sorted(p.name for p in (tmp_path / "v.vectors").glob("*.safetensors"))
    assert len(files) == 2 and all(f.startswith("sas_sycophancy_") for f in files)


def test_an_executors_rows_are_counted_on_a_progress_bar(tiny, tmp_path, capsys):
    """An executor (Ray) sends rows back in any order; the driver's bar counts each one as it is written."""
    grid = Grid("concept", ["weddings"], ["caa"], [1, 2], {"caa": [0.0, 0.1]},
                eval_settings={"n_prompts": 2, "max_new_tokens": 3, "n_calibration": 2})
    sent = []

    def executor(grid, shards, on_row):  # in process, shards backwards: what a remote worker pool may do
        runner = Runner(grid, tiny, progress=False)
        for shard in reversed(shards):
            runner.run(shard, on_row=lambda row, texts: (sent.append(row), on_row(row, texts)))

    rows = run_grid(grid, tmp_path / "r.jsonl", tiny, executor=executor)
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert len(sent) == len(rows) == 4 and all(r is not None for r in rows)
    assert any(line.startswith("concept grid: 100%") and "4/4" in line for line in bar), bar
    run_grid(grid, tmp_path / "r.jsonl", tiny, executor=executor, progress=False)  # all done: nothing sent
    assert len(sent) == 4 and "grid" not in capsys.readouterr().err


def test_shards_keep_item_and_method_together():
    grid = Grid("ab", ["sycophancy", "refusal"], ["caa", "actadd"], [1, 2], {"caa": [0, 1], "actadd": [1]}, "tiny")
    conds = grid.conditions()
    shards = Grid.shards(conds, 3)
    assert sorted(c for s in shards for c in s) == sorted(conds) and len(shards) == 3
    for s in shards:
        for c in s:
            assert all(d in s for d in conds if (d.item, d.method) == (c.item, c.method))
    assert Condition("sycophancy", "caa", 1, 0.0) in conds


def test_registries_list_methods_and_tasks_and_refuse_unknown_settings(tiny):
    assert {"caa", "actadd", "sas", "sas_dense"} <= set(methods())
    assert get_method("sas").needs_sae and get_method("sas").settings == {"tau": 0.1, "mean": "all", "top_k": None}
    with pytest.raises(ValueError, match="unknown method 'cca'"):
        get_method("cca")
    with pytest.raises(ValueError, match="has no setting"):
        Grid("ab", ["sycophancy"], ["caa"], [1], method_settings={"caa": {"tau": 0.2}})
    from sas.activations.contrast import Contrast

    c = Contrast("x", positive=["I feel good", "This is great"], negative=["I feel bad", "This is awful"])
    v = build_vector(tiny, "caa", c, [1, 2])
    assert v.layers == [1, 2] and v.data_hash == c.hash
    with pytest.raises(ValueError, match="sparse space"):
        build_vector(tiny, "sas", c, [1])


def test_runner_key_holds_sae_name_and_hash(tiny):
    sae = random_sae()
    grid = Grid("ab", ["sycophancy"], ["sas"], [LAYER], SAS, "tiny", saes={LAYER: "x"})
    k = Runner(grid, tiny, {LAYER: sae}).key(Condition("sycophancy", "sas", LAYER, 4.0))
    assert {"tau", "mean", "top_k", "sae", "sae_sha256", "data_hash", "n_test", "dtype"} <= set(k)
    with torch.no_grad():
        sae.W_enc.add_(1.0)
    k2 = Runner(grid, tiny, {LAYER: sae}).key(Condition("sycophancy", "sas", LAYER, 4.0))
    assert k2["sae_sha256"] != k["sae_sha256"]



@pytest.fixture
def mean_pos(request):
    """A method registered from the test (what a file in sas/methods/ does), with a setting (``scale``) that no
    shipped method has; removed at the end."""
    from sas.methods.registry import _METHODS, register
    from sas.steering.vector import SteeringVector

    _METHODS.all()  # the built-ins first
    request.addfinalizer(lambda: _METHODS.pop("mean_pos", None))

    @register("mean_pos", multipliers=(-1, 0, 1))
    def build(model, contrast, layers, saes=None, positions="after_prompt", scale: float = 1.0):
        """The mean activation of the positive side, scaled."""
        pos, _ = contrast.activations(model, layers)
        return SteeringVector({x: scale * pos[x].mean(0) for x in layers}, model.cfg.model_name, "mean_pos",
                              contrast.name, positions=positions, data_hash=contrast.hash)

    return "mean_pos"


def test_a_new_method_scorer_and_concept_are_one_registration_or_file_each(tiny, tmp_path, request, mean_pos):
    """What a user writes to add a method (a file in sas/methods/), a scorer (a registered class) and an open-ended
    target (a concept file): the runner, the sweeps and the CLI see them, and --task takes the concept file."""
    from dataclasses import dataclass

    import yaml

    from sas.cli import parser
    from sas.concepts import SCORERS, Scorer, register_scorer

    request.addfinalizer(lambda: SCORERS.pop("length", None))

    @register_scorer("length")
    @dataclass
    class Length(Scorer):
        def details(self, texts):
            return {"score": [float(len(t.split())) for t in texts]}

    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump({
        "name": "long", "scorer": "length", "prefix": "The following text is long.\n\n", "min_pairs": 8,
        "prompts": ["The river", "My aunt said", "In the morning"],
        "pairs": [{"positive": f"a long text about {i} things and more", "negative": f"short {i}"} for i in range(8)]}))
    df = task_sweep(tiny, str(path), [mean_pos], [1], None, out=tmp_path / "r.jsonl", n_prompts=2,
                    max_new_tokens=3, progress=False)
    assert sorted(df.multiplier) == [-1.0, 0.0, 1.0] and set(df.scale) == {1.0} and (df.score >= 0).all()
    args = parser().parse_args(["sweep", "--task", str(path), "--method", "mean_pos,caa"])
    assert args.task == [str(path)] and args.method == ["mean_pos", "caa"]
    assert parser().parse_args(["sweep", "--task", "topic,ocean"]).task == ["topic", "ocean"]
    with pytest.raises(SystemExit):
        parser().parse_args(["sweep", "--task", "sentimental"])


@pytest.mark.parametrize("kind,item,strength", [("task", "sentiment", 1.0), ("concept", "weddings", 0.1)])
def test_a_method_added_to_a_results_file_reuses_its_unsteered_rows(tiny, tmp_path, monkeypatch, mean_pos, kind,
                                                                     item, strength):
    """A second run that adds a method to a results file generates only the new method's steered continuations: the
    unsteered rows (multiplier 0) of the first run are reused, whatever settings the new method has."""
    import sas.evaluation.concept as ev

    generated = []
    real = ev.generate
    monkeypatch.setattr(ev, "generate", lambda model, prompts, **kw: generated.extend(prompts) or
                        real(model, prompts, **kw))
    out = tmp_path / "r.jsonl"
    settings = {"n_prompts": 2, "max_new_tokens": 3, "n_calibration": 2}
    one = Grid(kind, [item], ["caa"], [1, 2], {"caa": [0.0, strength]}, eval_settings=settings)
    first = run_grid(one, out, tiny, progress=False)
    assert len(generated) == 2 * 3  # the unsteered model once, CAA at two layers
    generated.clear()
    both = Grid(kind, [item], ["caa", mean_pos], [1, 2], {"caa": [0.0, strength], mean_pos: [0.0, strength]},
                eval_settings=settings)
    rows = run_grid(both, out, tiny, progress=False)
    assert len(generated) == 2 * 2  # mean_pos steered at two layers; no unsteered continuation again
    assert len(read_rows(out)) == 4 + 4 and len(read_rows(out.with_name("r.texts.jsonl"))) == 3 + 2
    zero = [r for r in rows if r["multiplier"] == 0]
    assert [(r["method"], r["layer"]) for r in zero] == [("caa", 1), ("caa", 2), (mean_pos, 1), (mean_pos, 2)]
    assert all(r["scores"] == first[0]["scores"] and r["perplexity"] == first[0]["perplexity"] for r in zero)
    assert zero[2]["scale"] == 1.0 and "scale" not in zero[0] and zero[2]["resid_change"] == 0.0
    # the reused row carries no setting or measure of the method it was first written for
    sas_rows = run_grid(Grid(kind, [item], [mean_pos], [1], {mean_pos: [0.0]}, eval_settings=settings,
                             method_settings={mean_pos: {"scale": 2.0}}), out, tiny, progress=False)
    assert sas_rows[0]["scale"] == 2.0 and len(generated) == 2 * 2


def test_the_shipped_result_files_still_load():
    """docs/data/*.jsonl (written by sas 0.1; the sentiment ones by the task evaluation that a concept replaced) read
    into the store of their kind and report as they did."""
    from pathlib import Path

    from sas.reports.tables import summary
    from sas.runs.store import to_frame

    files = sorted((Path(__file__).resolve().parents[1] / "docs" / "data").glob("*.jsonl"))
    assert files
    for f in files:
        first = json.loads(f.read_text().splitlines()[0])
        store = ResultStore(f, "task" if "task" in first else "ab")
        assert len(store.rows) == len(f.read_text().splitlines())
    table = summary(to_frame(read_rows(files[0].with_name("compare_sentiment.jsonl"))), "score")
    assert table.loc[("caa", "sentiment", 5), 0.0] == 0.139 and table.loc[("sas", "sentiment", 9), 8.0] == 0.672


# a run of the tiny model in its own process: a sweep over the given multipliers into one results file; after each
# row it waits until the file `go` exists (`-`: never waits), so that another process runs meanwhile
_RUN = r"""
import os, sys, time
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer
import sas
from sas.load.models import converted_model_dir
from sas.runs.store import ResultStore
from sas.runs.sweep import ab_sweep

out, go, mults = sys.argv[1], sys.argv[2], [float(x) for x in sys.argv[3].split(",")]
tok = AutoTokenizer.from_pretrained(converted_model_dir("gemma-3-270m"))
cfg = HookedTransformerConfig(n_layers=3, d_model=32, d_head=8, n_heads=4, d_mlp=64, n_ctx=256, d_vocab=len(tok),
                              act_fn="gelu", normalization_type="RMS", positional_embedding_type="rotary",
                              rotary_dim=8, seed=0, device="cpu", dtype=torch.float32)
model = HookedTransformer(cfg, tokenizer=tok).eval()
model.cfg.model_name = "tiny"
append = ResultStore.append
def slow_append(self, row, texts=None):
    append(self, row, texts)
    print("row", flush=True)
    t0 = time.time()
    while go != "-" and not os.path.exists(go) and time.time() - t0 < 300:
        time.sleep(0.1)
ResultStore.append = slow_append
vec = {"sycophancy": sas.actadd_vector(model, "a", "b", [1])}
try:
    ab_sweep(model, ["sycophancy"], [1], mults, out=out, n_test=2, vectors=vec, progress=False,
             with_side_effects=False)
except BlockingIOError as e:
    sys.exit(f"refused: {e}")
"""


def _row_keys(out):
    return [(r["method"], r["behavior"], r["layer"], r["multiplier"]) for r in read_rows(out)]


def test_two_processes_on_one_results_file_neither_lose_nor_double_a_row(tmp_path):
    import subprocess
    import sys
    import time

    out = tmp_path / "shared.jsonl"
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    go = tmp_path / "go"
    cmd = lambda mults, wait="-": [sys.executable, str(script), str(out), wait, mults]  # noqa: E731
    a = subprocess.Popen(cmd("1,2,3", str(go)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert a.stdout.readline().strip() == "row", a.stderr.read()[-2000:]  # A has written its first row, waits
        b = subprocess.run(cmd("1,2,3,4,5"), capture_output=True, text=True, timeout=600)  # B while A runs
    finally:
        go.touch()
    a_err = a.communicate(timeout=600)[1]
    assert a.returncode == 0, a_err[-2000:]
    assert b.returncode != 0 and "another sas run is writing" in b.stderr and str(out) in b.stderr, b.stderr[-2000:]
    keys = _row_keys(out)
    assert sorted(k[3] for k in keys) == [1.0, 2.0, 3.0], keys  # A's rows all there, none twice
    t0 = time.time()
    again = subprocess.run(cmd("1,2,3,4,5"), capture_output=True, text=True, timeout=600)  # after A: B's turn
    assert again.returncode == 0, again.stderr[-2000:]
    keys = _row_keys(out)
    assert sorted(k[3] for k in keys) == [1.0, 2.0, 3.0, 4.0, 5.0] and len(set(keys)) == len(keys), keys
    assert time.time() - t0 < 600


def test_repairing_a_torn_line_keeps_rows_written_since_it_was_read(tmp_path):
    out = tmp_path / "r.jsonl"
    row = lambda m: {"model": "tiny", "method": "caa", "behavior": "x", "layer": 1, "multiplier": m}  # noqa: E731
    out.write_text(json.dumps(row(1.0)) + "\n" + '{"model": "ti')  # the last line was cut by a kill
    with pytest.warns(UserWarning, match="torn row"):
        store = ResultStore(out)
    # meanwhile the file was repaired and grew by two rows (written by another store on the same file)
    out.write_text("".join(json.dumps(row(m)) + "\n" for m in (1.0, 2.0, 3.0)))
    store.append(row(4.0))
    assert [r["multiplier"] for r in read_rows(out)] == [1.0, 2.0, 3.0, 4.0]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".repair"))]
