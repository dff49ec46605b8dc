"""The steering surface: one protocol for dense and sparse vectors, one loader of saved vectors of either kind,
one place that makes hooks (with a receipt of what they edited), and vectors x multipliers that fit the model's
dtype. Fast tests on the tiny model; receipts and a saved SAS vector through `sas generate` on the real gemma."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_reliability import LAYER, _sparse, _vec, random_sae

from sas.forward.generate import generate
from sas.steering import NoEdit, Receipt, SparseVector, SteeringError, SteeringVector, Vector, load_vector, steer
from sas.steering.steer import recording, steering_hooks


def test_both_kinds_implement_the_protocol(tiny):
    dense, sparse = _vec(), _sparse(random_sae())
    for v in (dense, sparse):
        assert isinstance(v, Vector) and v.layers == [LAYER] and v.d_model == 32
        assert v.hook_name(LAYER) == f"blocks.{LAYER}.hook_resid_post" and not v.aligned(LAYER)
        assert v.summary()["kind"] == v.kind and isinstance(v.to_dense(), SteeringVector)
    assert dense.linear and not sparse.linear and dense.to_dense() is dense
    assert torch.equal(sparse.tensor(LAYER), sparse.codes[LAYER]) and torch.equal(dense.tensor(LAYER),
                                                                                  dense.directions[LAYER])


def test_load_vector_reads_either_kind(tiny, tmp_path):
    sae = random_sae()
    dense, sparse = _vec(), _sparse(sae)
    dense.save(tmp_path / "d")
    sparse.save(tmp_path / "s")
    got = load_vector(tmp_path / "d")
    assert got.kind == "dense" and torch.equal(got.directions[LAYER], dense.directions[LAYER])
    got = load_vector(tmp_path / "s.safetensors", saes={LAYER: sae})
    assert got.kind == "sparse" and torch.equal(got.codes[LAYER], sparse.codes[LAYER]) and got.saes[LAYER] is sae


def test_load_vector_keeps_a_dot_inside_the_name(tmp_path):
    """``caa_tau0.1`` is a name, not ``caa_tau0`` with a suffix: with both files present the right one is read."""
    a, b = _vec(seed=1), _vec(seed=2)
    a.save(tmp_path / "caa_tau0.1")
    b.save(tmp_path / "caa_tau0")
    assert torch.equal(load_vector(tmp_path / "caa_tau0.1").directions[LAYER], a.directions[LAYER])
    assert torch.equal(load_vector(tmp_path / "caa_tau0").directions[LAYER], b.directions[LAYER])


def test_a_file_of_the_other_kind_is_refused_naming_both(tmp_path):
    sae = random_sae()
    _vec().save(tmp_path / "d")
    _sparse(sae).save(tmp_path / "s")
    # a sparse file read as dense had loaded its codes as a 64-wide "direction"
    with pytest.raises(ValueError, match=r"sparse vector \(SparseVector\), not a dense one \(SteeringVector\)"):
        SteeringVector.load(tmp_path / "s")
    with pytest.raises(ValueError, match=r"dense vector \(SteeringVector\), not a sparse one \(SparseVector\)"):
        SparseVector.load(tmp_path / "d", saes={LAYER: sae})


def test_export_and_serve_load_dotted_names(tiny, tmp_path, capsys):
    """`sas export` and the server's vectors folder read ``caa_tau0.1`` itself, not ``caa_tau0.safetensors``."""
    from sas import cli
    from sas.export.gguf import load_gguf
    from sas.serve.vectors import VectorStore

    a, b = _vec(seed=1), _vec(seed=2)
    a.save(tmp_path / "caa_tau0.1")
    b.save(tmp_path / "caa_tau0")
    cli.main(["export", "--gguf", str(tmp_path / "out.gguf"), "--vector", str(tmp_path / "caa_tau0.1")])
    assert torch.allclose(load_gguf(tmp_path / "out.gguf").directions[LAYER], a.directions[LAYER])
    got = VectorStore(tiny, tmp_path).get("caa_tau0.1")
    assert torch.equal(got.directions[LAYER], a.directions[LAYER])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_vector_times_multiplier_must_fit_the_model_dtype(tiny, dtype):
    """Entries finite in the file but an edit beyond the dtype's range steer to NaN text: refused before any pass."""
    big = SteeringVector({LAYER: torch.full((32,), 3e38 if dtype == torch.float32 else 1e4)}, "tiny", "caa")
    old = tiny.cfg.dtype
    tiny.cfg.dtype = dtype  # the check reads the dtype the model computes in
    try:
        with pytest.raises(SteeringError, match=f"beyond what {str(dtype).removeprefix('torch.')} holds"):
            steering_hooks(tiny, big, 2.0)
        with pytest.raises(SteeringError, match="smaller multiplier"):
            steering_hooks(tiny, _vec(), 1e39 if dtype == torch.float32 else 1e5)
        with pytest.raises(SteeringError, match="beyond"):  # sparse: the code edit too
            steering_hooks(tiny, _sparse(random_sae()), 3e38 if dtype == torch.float32 else 1e5)
    finally:
        tiny.cfg.dtype = old
    steering_hooks(tiny, _vec(), 2.0)  # an ordinary edit passes


def test_receipt_counts_the_edits_per_layer_and_strength(tiny):
    v = _vec(layers=(1, 2))
    receipt = Receipt()
    with steer(tiny, v, torch.tensor([2.0, 0.0]), positions="all", receipt=receipt):
        generate(tiny, ["I think that", "The weather is"], max_new_tokens=3)
    got = receipt.layers()
    assert set(got) == {"1", "2"} and all(x["positions"] > 0 and x["edit_norm"] > 0 for x in got.values())
    assert receipt.layers(2.0) == got and receipt.layers(0.0) == {"1": {"positions": 0, "edit_norm": 0.0},
                                                                  "2": {"positions": 0, "edit_norm": 0.0}}
    with pytest.raises(NoEdit, match="edited no position"):
        receipt.check("row with strength 0", 0.0)
    with recording() as outer:  # steer blocks inside recording() record without being told
        with steer(tiny, v, 1.0):
            generate(tiny, ["Hello"], max_new_tokens=2)
    assert outer.check("x")["1"]["positions"] > 0


def test_old_paths_warn(tiny):
    from sas.serve import batching
    from sas.serve import vectors as serve_vectors

    with pytest.warns(DeprecationWarning, match="sas.steering.load_vector"):
        old = serve_vectors.load_vector
    assert old is serve_vectors.read_vector
    with pytest.warns(DeprecationWarning, match="row_terms"):
        batch_hooks = batching.batch_hooks
    job = batching.Job([2, 3], 2, lambda e: None, steer=[batching.Term(_vec(), 1.0, [LAYER], "all")])
    assert [name for name, _ in batch_hooks([job], tiny)] == [f"blocks.{LAYER}.hook_resid_post"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from sas.steering.effects import measure_effects  # the new path is quiet
    assert callable(measure_effects)


@pytest.mark.slow
def test_receipts_on_gemma(gemma, tmp_path):
    """The receipt is what the hook applied: |m v| / |resid| for a dense vector, an edit for a real SAS vector,
    and a zero vector (a silent no-op in other tools) is an error in a run, not a row."""
    from sas.concepts.tasks import sentiment_pairs
    from sas.load.saes import load_sae
    from sas.methods.caa import contrastive_vector
    from sas.methods.sas import sas_vector_from_texts
    from sas.runs.grid import Grid, run_grid

    pos, neg = sentiment_pairs()
    caa = contrastive_vector(gemma, pos[:16], neg[:16], [6], behavior="sentiment")
    receipt = Receipt()
    with steer(gemma, caa, 2.0, positions="after_prompt", receipt=receipt):
        generate(gemma, ["I think that the movie was"], max_new_tokens=4)
    got = receipt.check("caa x 2")["6"]
    assert got["positions"] == 4  # after_prompt: the last prompt token and three fed-back new tokens
    assert 0 < got["edit_norm"] < 10

    sv = sas_vector_from_texts(gemma, load_sae("gemma-3-270m-L9-4k", gemma), pos[:16], neg[:16], tau=0.1)
    receipt = Receipt()
    with steer(gemma, sv, 8.0, receipt=receipt):
        generate(gemma, ["I think that the movie was"], max_new_tokens=4)
    assert receipt.check("sas x 8")["9"]["positions"] > 0

    zero = caa * 0.0
    grid = Grid("task", ["sentiment"], ["caa"], [6], {"caa": [2.0]}, eval_settings={"n_prompts": 2,
                                                                                  "max_new_tokens": 3})
    with pytest.raises(NoEdit, match="edited no position"):
        run_grid(grid, tmp_path / "rows.jsonl", gemma, vectors={"sentiment": zero}, progress=False)
    rows = run_grid(grid, tmp_path / "ok.jsonl", gemma, vectors={"sentiment": caa}, progress=False)
    assert rows[0]["receipt"]["6"]["positions"] > 0 and rows[0]["receipt"]["6"]["edit_norm"] > 0


@pytest.mark.slow
def test_generate_cli_takes_a_saved_sas_vector(gemma, tmp_path, monkeypatch):
    """`sas generate --vector` reads a saved SAS vector (it read dense vectors only) and records its receipt."""
    import json

    from sas import cli
    from sas.concepts.tasks import sentiment_pairs
    from sas.load.saes import load_sae
    from sas.methods.sas import sas_vector_from_texts

    pos, neg = sentiment_pairs()
    sv = sas_vector_from_texts(gemma, load_sae("gemma-3-270m-L9-4k", gemma), pos[:16], neg[:16], tau=0.1)
    path = sv.save(tmp_path / "sas_tau0.1")
    out = tmp_path / "gen.jsonl"
    monkeypatch.setattr(cli, "_model", lambda args: gemma)  # the session's gemma, not a second copy
    cli.main(["generate", "--vector", str(tmp_path / "sas_tau0.1"), "--prompt", "I think that", "--multipliers",
              "8", "--max-new-tokens", "3", "--out", str(out)])
    row = json.loads(out.read_text().splitlines()[0])
    assert path.exists() and row["multiplier"] == 8 and row["receipt"]["9"]["positions"] > 0
