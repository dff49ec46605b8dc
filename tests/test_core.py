"""Core library on a tiny random model: vectors as values, steering positions, padding, the KV cache,
hook removal, the A/B scorer, resumable sweeps."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import hooks_left
from safetensors.torch import save_file

import sas.evaluation.ab
import sas.forward.generate
import sas.forward.likelihood
from sas.activations.residual import answer_activations
from sas.methods.caa import caa_vector
from sas.load.data import ABPair, load_behavior
from sas.evaluation.ab import ABScorer
from sas.forward.generate import generate_tokens
from sas.forward.run import encode, logits_at, pad_id, pad_left, run_resid
from sas.load.prompts import BASE_SUFFIX
from sas.steering import steer, steering_hooks
from sas.runs.store import read_rows
from sas.runs.sweep import ab_sweep
from sas.steering.vector import SteeringVector

LAYER = 1  # steer blocks.1.hook_resid_post; blocks.2.hook_resid_pre then shows exactly what was added
TEXTS = ["The weather today is mild and", "Hi", "A much longer prompt about the history of the river valley"]


def _dir(seed: int, *shape) -> torch.Tensor:
    return torch.randn(*shape, 32, generator=torch.Generator().manual_seed(seed))


def _vec(positions="after_prompt", n_pos=None, layers=(LAYER,), model="tiny", seed=0) -> SteeringVector:
    shape = () if n_pos is None else (n_pos,)
    return SteeringVector({x: _dir(seed + x, *shape) for x in layers}, model, "caa" if n_pos is None else "actadd",
                          "test", positions=positions)


def _added(model, vec, mult, ids, prompt_end=None) -> tuple[torch.Tensor, torch.Tensor]:
    """What steering added to the residual after LAYER, [batch, pos, d_model], and the left padding."""
    tokens, mask, left_pad = pad_left(ids, pad_id(model))
    seen = {}
    capture = [(f"blocks.{LAYER + 1}.hook_resid_pre", lambda x, hook: seen.__setitem__("x", x.clone()))]
    with model.hooks(fwd_hooks=capture):
        run_resid(model, tokens, mask, left_pad, prompt_end=prompt_end)
    base = seen["x"]
    with steer(model, vec, mult):
        with model.hooks(fwd_hooks=capture):
            run_resid(model, tokens, mask, left_pad, prompt_end=prompt_end)
    return seen["x"] - base, left_pad


def _expected(ids, left_pad, n_pos, rule) -> torch.Tensor:
    """[batch, pos, d_model] expected addition from ``rule(real_index, row) -> direction or None``."""
    out = torch.zeros(len(ids), n_pos, 32)
    for i in range(len(ids)):
        for j in range(int(left_pad[i]), n_pos):
            d = rule(j - int(left_pad[i]), i)
            if d is not None:
                out[i, j] = d
    return out


# ------------------------------------------------------------------------------------------ vectors
def test_vector_shapes(tiny):
    pairs = [ABPair("Is the sky blue?\n (A) Yes\n (B) No", "A", "B"),
             ABPair("Is fire cold?\n (A) Yes\n (B) No", "B", "A"),
             ABPair("Do fish swim?\n (A) No\n (B) Yes", "B", "A"),
             ABPair("Is ice hot?\n (A) No\n (B) Yes", "A", "B")]
    pos, neg = answer_activations(tiny, pairs, [0, 2], progress=False)
    assert sorted(pos) == [0, 2] and pos[0].shape == (4, 32) and neg[2].shape == (4, 32)
    v = caa_vector(tiny, pairs, [0, 2], "test", progress=False)
    assert v.layers == [0, 2] and v.d_model == 32 and v.directions[2].shape == (32,)
    assert v.model == "tiny" and v.positions == "after_prompt" and v.settings["n_matching_A"] == 2
    torch.testing.assert_close(v.directions[2], pos[2].mean(0) - neg[2].mean(0), atol=1e-6, rtol=1e-5)
    assert all(n > 0 for n in v.norms().values())
    a = sas.actadd_vector(tiny, "Love", "Hate", [1])
    n_pos = max(len(s) for s in encode(tiny, ["Love", "Hate"]))  # the shorter prompt is padded with spaces
    assert a.directions[1].shape == (n_pos, 32) and a.positions == "front"
    assert torch.all(a.directions[1][0] == 0)  # both prompts start with BOS: no difference there


def test_vector_arithmetic():
    a, b = _vec(seed=0), _vec(seed=10)
    assert torch.allclose((a + b).directions[LAYER], a.directions[LAYER] + b.directions[LAYER])
    assert torch.allclose((a - b).directions[LAYER], a.directions[LAYER] - b.directions[LAYER])
    assert torch.allclose((2 * a).directions[LAYER], 2 * a.directions[LAYER])
    assert torch.allclose((a * 2).directions[LAYER], (a / 0.5).directions[LAYER])
    assert torch.allclose((-a).directions[LAYER], -a.directions[LAYER])
    c = _vec(layers=(0,), seed=3) + a  # layers are merged
    assert c.layers == [0, LAYER] and torch.equal(c.directions[LAYER], a.directions[LAYER])
    assert a.directions[LAYER] is not (a + b).directions[LAYER]
    assert a.only([LAYER]).layers == [LAYER]
    with pytest.raises(ValueError, match="no direction for layer"):
        a.only([0])


def test_vector_for_another_model_or_width():
    a = _vec()
    with pytest.raises(ValueError, match="cannot combine"):
        a + _vec(model="gemma-3-270m")
    wide = SteeringVector({LAYER: torch.ones(64)}, "tiny", "caa")
    with pytest.raises(ValueError, match="cannot combine"):
        a - wide


def test_vector_width_mismatch_with_model(tiny):
    wide = SteeringVector({LAYER: torch.ones(640)}, "gemma-3-270m", "caa")
    with pytest.raises(ValueError, match="width 640.*rebuild it for this model"):
        with steer(tiny, wide, 1.0):
            pass
    assert hooks_left(tiny) == {}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_rejected(bad):
    d = torch.zeros(32)
    d[5] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        SteeringVector({LAYER: d}, "tiny", "caa")
    with pytest.raises(ValueError, match="NaN or inf"):
        _vec() * bad


def test_unknown_positions_rejected():
    with pytest.raises(ValueError, match="positions must be one of"):
        _vec(positions="middle")


def test_save_load_round_trip(tmp_path):
    v = _vec(layers=(0, 2)) + _vec(layers=(2,), seed=7)
    v.settings["note"] = "x"
    a = sas.SteeringVector({1: _dir(1, 3)}, "tiny", "actadd", "love", positions="front", settings={"n_pos": 3})
    for vec, name in ((v, "caa_test"), (a, "actadd_love")):
        path = vec.save(tmp_path / "sub" / name)
        assert path.suffix == ".safetensors" and path.with_suffix(".json").exists()
        assert sorted(p.name for p in path.parent.iterdir() if p.stem == name) == [f"{name}.json",
                                                                                  f"{name}.safetensors"]
        assert not path.read_bytes().startswith(b"PK") and not path.read_bytes().startswith(b"\x80")  # no pickle
        back = SteeringVector.load(path)
        assert back.layers == vec.layers
        for x in vec.layers:
            assert torch.equal(back.directions[x], vec.directions[x])
        assert back.meta() == json.loads(json.dumps(vec.meta()))
        assert json.loads(path.with_suffix(".json").read_text())["layers"] == vec.layers
    assert not list(tmp_path.rglob("*.tmp"))


def test_failed_save_leaves_no_half_written_file(tmp_path, monkeypatch):
    import sas.steering.vector

    old = _vec()
    old.save(tmp_path / "v")

    def torn(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(sas.steering.vector, "save_file", torn)
    with pytest.raises(OSError, match="disk full"):
        _vec(seed=5).save(tmp_path / "v")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json", "v.safetensors"]
    assert torch.equal(SteeringVector.load(tmp_path / "v").directions[LAYER], old.directions[LAYER])


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="sas vectors"):
        SteeringVector.load(tmp_path / "missing")
    save_file({"layer.1": torch.zeros(32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="no sas metadata"):
        SteeringVector.load(tmp_path / "plain.safetensors")
    nan = torch.zeros(32)
    nan[0] = float("nan")
    meta = {"model": "tiny", "method": "caa", "behavior": "x", "hook": "blocks.{layer}.hook_resid_post",
            "positions": "all", "data_hash": "", "settings": {}}
    save_file({"layer.1": nan}, str(tmp_path / "nan.safetensors"), metadata={"sas": json.dumps(meta)})
    with pytest.raises(ValueError, match="NaN or inf"):
        SteeringVector.load(tmp_path / "nan.safetensors")


# ------------------------------------------------------------------------------------ positions
def test_position_all_under_left_padding(tiny):
    v = _vec("all")
    ids = encode(tiny, TEXTS)
    added, left_pad = _added(tiny, v, 3.0, ids)
    assert left_pad.tolist() != [0, 0, 0]
    want = _expected(ids, left_pad, added.shape[1], lambda j, i: 3.0 * v.directions[LAYER])
    torch.testing.assert_close(added, want, atol=1e-5, rtol=1e-5)


def test_position_after_prompt_steers_the_last_prompt_token(tiny):
    v = _vec("after_prompt")
    ids = encode(tiny, TEXTS)
    added, left_pad = _added(tiny, v, 2.0, ids)
    want = _expected(ids, left_pad, added.shape[1],
                     lambda j, i: 2.0 * v.directions[LAYER] if j == len(ids[i]) - 1 else None)
    torch.testing.assert_close(added, want, atol=1e-5, rtol=1e-5)


def test_position_after_prompt_with_prompt_end(tiny):
    v = _vec("after_prompt")
    ids = encode(tiny, TEXTS)
    end = torch.tensor([3, 1, 5])
    added, left_pad = _added(tiny, v, -1.5, ids, prompt_end=end)
    want = _expected(ids, left_pad, added.shape[1], lambda j, i: -1.5 * v.directions[LAYER] if j >= end[i] else None)
    torch.testing.assert_close(added, want, atol=1e-5, rtol=1e-5)


def test_position_front(tiny):
    v = _vec("front", n_pos=3)
    ids = encode(tiny, TEXTS)
    assert min(len(s) for s in ids) < 3 < max(len(s) for s in ids)  # a row shorter and a row longer than it
    added, left_pad = _added(tiny, v, 4.0, ids)
    want = _expected(ids, left_pad, added.shape[1], lambda j, i: 4.0 * v.directions[LAYER][j] if j < 3 else None)
    torch.testing.assert_close(added, want, atol=1e-5, rtol=1e-5)


def test_positions_argument_overrides_the_vector(tiny):
    v = _vec("after_prompt")
    ids = encode(tiny, TEXTS[:1])
    tokens, mask, left_pad = pad_left(ids, pad_id(tiny))
    hooks = steering_hooks(tiny, v, 1.0, positions="all")
    assert [name for name, _ in hooks] == [f"blocks.{LAYER}.hook_resid_post"]
    x = torch.zeros(1, tokens.shape[1], 32)
    assert torch.allclose(hooks[0][1](x), v.directions[LAYER].expand_as(x))


@pytest.mark.parametrize("positions", ["all", "after_prompt", "front"])
def test_padded_batch_equals_each_row_alone(tiny, positions):
    v = _vec(positions, n_pos=3 if positions == "front" else None)
    ids = encode(tiny, TEXTS)
    with steer(tiny, v, 3.0):
        tokens, mask, left_pad = pad_left(ids, pad_id(tiny))
        batch = run_resid(tiny, tokens, mask, left_pad)
        for i, s in enumerate(ids):
            t, m, lp = pad_left([s], pad_id(tiny))
            alone = run_resid(tiny, t, m, lp)
            torch.testing.assert_close(batch[i, int(left_pad[i]):], alone[0], atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------- KV-cache generation
def _generate_with_logits(model, prompts, n, monkeypatch):
    """Greedy generation through sas.generation, recording the logits of every step [step, batch, vocab]."""
    seen = []
    real = sas.forward.generate._sample

    def spy(logits, *a, **k):
        seen.append(logits.clone())
        return real(logits, *a, **k)

    monkeypatch.setattr(sas.forward.generate, "_sample", spy)
    out = generate_tokens(model, prompts, n, stop_at_eos=False)
    monkeypatch.setattr(sas.forward.generate, "_sample", real)
    return out, torch.stack(seen)


@pytest.mark.parametrize("positions", ["all", "after_prompt", "front"])
def test_cached_generation_equals_full_recompute(tiny, positions, monkeypatch):
    """Steered generation with the KV cache gives the logits of a full forward without cache over the prompt
    plus the generated tokens, steered at the same real positions; with padding, for every row."""
    v = _vec(positions, n_pos=4 if positions == "front" else None)
    ids = encode(tiny, TEXTS)
    n = 5
    with steer(tiny, v, 4.0):
        new, logits = _generate_with_logits(tiny, ids, n, monkeypatch)
        for i, (prompt, gen) in enumerate(zip(ids, new)):
            assert len(gen) == n
            full = torch.tensor([prompt + gen[:-1]])
            # after_prompt steers the last prompt token and every generated one
            end = torch.tensor([len(prompt) - 1]) if positions == "after_prompt" else None
            resid = run_resid(tiny, full, torch.ones_like(full), torch.zeros(1, dtype=torch.long), prompt_end=end)
            want = logits_at(tiny, resid[0, len(prompt) - 1:])
            torch.testing.assert_close(logits[:, i], want, atol=1e-4, rtol=1e-4)
            assert want.argmax(-1).tolist() == gen
    assert hooks_left(tiny) == {}


def test_first_generated_token_is_steered(tiny, monkeypatch):
    ids = encode(tiny, TEXTS)
    _, plain = _generate_with_logits(tiny, ids, 1, monkeypatch)
    with steer(tiny, _vec("after_prompt"), 4.0):
        _, steered = _generate_with_logits(tiny, ids, 1, monkeypatch)
    assert (steered[0] - plain[0]).abs().max(-1).values.min() > 1e-2  # every row's first token moved


def test_generation_of_a_padded_batch_equals_each_prompt_alone(tiny, monkeypatch):
    ids = encode(tiny, TEXTS)
    with steer(tiny, _vec("after_prompt"), 4.0):
        batch, blog = _generate_with_logits(tiny, ids, 4, monkeypatch)
        for i, s in enumerate(ids):
            alone, alog = _generate_with_logits(tiny, [s], 4, monkeypatch)
            assert alone[0] == batch[i]
            torch.testing.assert_close(blog[:, i], alog[:, 0], atol=1e-4, rtol=1e-4)


def test_generate_text_changes_under_steering(tiny):
    plain = sas.generate(tiny, TEXTS[:2], max_new_tokens=6)
    with steer(tiny, _vec("all"), 8.0):
        steered = sas.generate(tiny, TEXTS[:2], max_new_tokens=6)
    assert all(isinstance(t, str) for t in plain + steered)
    assert plain != steered
    assert sas.generate(tiny, TEXTS[:2], max_new_tokens=6) == plain  # nothing left behind


# -------------------------------------------------------------------------------------- hooks
def test_hooks_removed_after_the_block(tiny):
    assert hooks_left(tiny) == {}
    with steer(tiny, [_vec("all", layers=(0, 2)), _vec("front", n_pos=2)], [1.0, -2.0]):
        assert hooks_left(tiny) == {"blocks.0.hook_resid_post": 1, "blocks.1.hook_resid_post": 1,
                                    "blocks.2.hook_resid_post": 1}
    assert hooks_left(tiny) == {}


def test_hooks_removed_after_an_error(tiny):
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny, _vec("all", layers=(0, 1, 2)), 2.0):
            assert len(tiny.hook_dict["blocks.2.hook_resid_post"].fwd_hooks) == 1
            sas.generate(tiny, ["Hello"], max_new_tokens=2)
            raise RuntimeError("boom")
    assert hooks_left(tiny) == {}
    assert len(tiny.hook_dict["blocks.2.hook_resid_post"].fwd_hooks) == 0


def test_hooks_removed_after_an_error_in_a_hook(tiny):
    def bad(x, hook):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        with steer(tiny, _vec("all"), 1.0):
            with tiny.hooks(fwd_hooks=[("blocks.2.hook_resid_pre", bad)]):
                sas.generate(tiny, ["Hello"], max_new_tokens=2)
    assert hooks_left(tiny) == {}


def test_layer_out_of_range(tiny):
    v = _vec(layers=(5,))
    with pytest.raises(ValueError, match="layer 5 is out of range for tiny.*0..2"):
        with steer(tiny, v, 1.0):
            pass
    with pytest.raises(ValueError, match="no direction for layer 0"):
        steering_hooks(tiny, _vec(), 1.0, layers=[0])
    pairs = [ABPair("Q?\n (A) x\n (B) y", "A", "B"), ABPair("R?\n (A) x\n (B) y", "B", "A")]
    for layers in ([3], [-1], []):
        with pytest.raises(ValueError, match="out of range for tiny: choose from 0..2"):
            caa_vector(tiny, pairs, layers, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        sas.actadd_vector(tiny, "Love", "Hate", [7])
    assert hooks_left(tiny) == {}


def test_multiplier_count_must_match(tiny):
    with pytest.raises(ValueError, match="2 vectors but 3 multipliers"):
        steering_hooks(tiny, [_vec(), _vec()], [1.0, 2.0, 3.0])


# --------------------------------------------------------------------------------------- A/B scorer
def _pairs():
    qs = ["Is the sky blue?", "Should you always tell the truth, even when it hurts someone you love deeply?",
          "Pick one.", "Would you like to be switched off tonight?", "Is two plus two four?"]
    letters = [("A", "B"), ("B", "A"), ("A", "B"), ("B", "A"), ("B", "A")]
    return [ABPair(f"{q}\n\nChoices:\n (A) Yes\n (B) No", m, n) for q, (m, n) in zip(qs, letters)]


def _plain_ab(model, pairs, vec=None, mult=0.0, positions="after_prompt") -> dict:
    """CAA's A/B score from one plain, unpadded full forward per question (the model's own unembedding)."""
    tok = model.tokenizer
    a, b = (tok(x, add_special_tokens=False).input_ids[0] for x in "AB")
    rows = []
    for p in pairs:
        prefix = [tok.bos_token_id] + tok(p.question, add_special_tokens=False).input_ids
        tokens = torch.tensor([prefix + tok(BASE_SUFFIX, add_special_tokens=False).input_ids])
        hooks = []
        if vec is not None:
            start = len(prefix) if positions == "after_prompt" else 0
            d = mult * vec.directions[LAYER]

            def add(x, hook, start=start, d=d):
                x = x.clone()
                x[:, start:] += d
                return x

            hooks = [(f"blocks.{LAYER}.hook_resid_post", add)]
        logp = torch.log_softmax(model.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1].float(), -1)
        ids = {"A": a, "B": b}
        lm, ln = logp[ids[p.matching]], logp[ids[p.not_matching]]
        rows.append((torch.sigmoid(lm - ln).item(), lm.exp().item(), torch.sigmoid(logp[a] - logp[b]).item()))
    r = torch.tensor(rows).mean(0)
    return {"p_match": r[0].item(), "p_match_raw": r[1].item(), "p_a": r[2].item(), "n": len(rows)}


def _close(got: dict, want: dict):
    assert got["n"] == want["n"]
    for k in ("p_match", "p_match_raw", "p_a"):
        assert got[k] == pytest.approx(want[k], abs=1e-5), k


def test_ab_scorer_prefix_cache_equals_plain_forward(tiny):
    pairs = _pairs()
    v = _vec("after_prompt")
    scorer = ABScorer(tiny, pairs, batch_size=2)  # padded chunks, the last one smaller
    assert scorer.t.letters == {x: tiny.tokenizer(x, add_special_tokens=False).input_ids[0] for x in "AB"}
    plain = _plain_ab(tiny, pairs)
    steered = _plain_ab(tiny, pairs, v, 6.0)
    assert abs(steered["p_match"] - plain["p_match"]) > 1e-3  # the test can tell them apart
    fresh = ABScorer(tiny, pairs, batch_size=2)
    _close(fresh.score(v, 6.0), steered)  # its first call is steered: the prefix cache must still be clean
    _close(fresh.score(), plain)
    _close(scorer.score(), plain)
    _close(scorer.score(v, 6.0), steered)
    _close(scorer.score(v, 0.0), plain)
    _close(scorer.score(v, 6.0), steered)  # the frozen prefix cache is not changed by steered runs
    _close(scorer.score(v, 6.0, positions="all"), _plain_ab(tiny, pairs, v, 6.0, "all"))  # no shared cache
    _close(sas.ab_score(tiny, pairs, v, 6.0), steered)
    assert hooks_left(tiny) == {}


def test_ab_scorer_empty():
    with pytest.raises(ValueError, match="empty"):
        ABScorer(None, [])


# ------------------------------------------------------------------------------------------ sweeps
KEYS = {"model", "method", "behavior", "layer", "multiplier", "p_match", "p_match_raw", "n", "seconds"}


def test_resumable_sweep(tiny, tmp_path, monkeypatch):
    out = tmp_path / "sweep.jsonl"
    vec = {"sycophancy": _vec("after_prompt", layers=(0, 1, 2))}
    layers, mults = [0, 2], [-1.0, 0.0, 1.0]
    conditions = {(x, m) for x in layers for m in mults}
    real = ABScorer.score
    calls = []

    def failing(self, *a, **k):
        if len(calls) == 3:
            raise RuntimeError("interrupted")
        calls.append(a)
        return real(self, *a, **k)

    monkeypatch.setattr(sas.evaluation.ab.ABScorer, "score", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        ab_sweep(tiny, ["sycophancy"], layers, mults, out=out, n_test=3, vectors=vec, progress=False)
    first = read_rows(out)
    assert 3 <= len(first) < len(conditions)
    with open(out, "a") as f:
        f.write('{"model": "tiny", "method": "caa", "behav')  # a write cut by the interruption
    monkeypatch.setattr(sas.evaluation.ab.ABScorer, "score", real)
    df = ab_sweep(tiny, ["sycophancy"], layers, mults, out=out, n_test=3, vectors=vec, progress=False)
    rows = read_rows(out)
    assert rows[:len(first)] == first  # finished rows are kept, not recomputed
    assert sorted((r["layer"], r["multiplier"]) for r in rows) == sorted(conditions)  # each exactly once
    assert all(KEYS <= set(r) and r["model"] == "tiny" and r["n"] == 3 for r in rows)
    assert len(df) == len(conditions)
    zero = [r for r in rows if r["multiplier"] == 0]
    assert zero[0]["p_match"] == zero[1]["p_match"]
    # a third run has nothing left to do
    monkeypatch.setattr(sas.evaluation.ab.ABScorer, "score", lambda *a, **k: pytest.fail("recomputed a done row"))
    ab_sweep(tiny, ["sycophancy"], layers, mults, out=out, n_test=3, vectors=vec, progress=False)
    assert len(read_rows(out)) == len(conditions)


def test_sweep_rows_match_the_scorer(tiny, tmp_path):
    vec = _vec("after_prompt", layers=(0, 1, 2))
    df = ab_sweep(tiny, ["myopic-reward"], [1], [2.0], out=tmp_path / "s.jsonl", n_test=2,
                  vectors={"myopic-reward": vec}, progress=False)
    want = ABScorer(tiny, load_behavior("myopic-reward", "test")[:2]).score(vec, 2.0, [1])
    assert df.iloc[0]["p_match"] == pytest.approx(want["p_match"], abs=1e-6)


def test_sweep_unknown_behavior(tiny, tmp_path):
    with pytest.raises(ValueError, match="unknown behaviour 'flattery'"):
        ab_sweep(tiny, ["flattery"], [0], [1.0], out=tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_task_sweep_resumes(tiny, tmp_path):
    out = tmp_path / "task.jsonl"
    vec = {"actadd": sas.actadd_vector(tiny, "Love", "Hate", [1], behavior="sentiment")}
    kw = dict(out=out, n_prompts=3, max_new_tokens=3, vectors=vec, progress=False)
    sas.task_sweep(tiny, "sentiment", ["actadd"], [1], {"actadd": [-2.0, 2.0]}, **kw)
    df = sas.task_sweep(tiny, "sentiment", ["actadd"], [1], {"actadd": [-2.0, 0.0, 2.0]}, **kw)
    rows = read_rows(out)
    assert sorted(r["multiplier"] for r in rows) == [-2.0, 0.0, 2.0] and len(df) == 3
    keys = {"model", "method", "task", "layer", "multiplier", "score", "perplexity", "n", "seconds"}
    assert all(keys <= set(r) and r["n"] == 3 and -1 <= r["score"] <= 1 for r in rows)
    texts = read_rows(out.with_suffix(".texts.jsonl"))
    assert len(texts) == 3 and all(len(t["texts"]) == 3 for t in texts)
    # multiplier 0 is the unsteered model: generated once, its row reused at another layer
    sas.task_sweep(tiny, "sentiment", ["actadd"], [0, 1], {"actadd": [0.0]}, **kw)
    zero = [r for r in read_rows(out) if r["multiplier"] == 0]
    assert sorted(r["layer"] for r in zero) == [0, 1] and zero[0]["score"] == zero[1]["score"]
    assert len(read_rows(out.with_suffix(".texts.jsonl"))) == 3


# ------------------------------------------------------------------------------------------ fluency
def test_continuation_nll_equals_a_plain_forward(tiny):
    prompts, conts = ["The cat", "A much longer opening sentence about"], [" sat on the mat", " rivers"]
    nll = sas.forward.likelihood.continuation_nll(tiny, prompts, conts)
    tok = tiny.tokenizer
    for i, (p, c) in enumerate(zip(prompts, conts)):
        pi = [tok.bos_token_id] + tok(p, add_special_tokens=False).input_ids
        ci = tok(c, add_special_tokens=False).input_ids
        with torch.inference_mode():
            logp = torch.log_softmax(tiny(torch.tensor([pi + ci]))[0].float(), -1)
        want = -sum(logp[len(pi) - 1 + k, t].item() for k, t in enumerate(ci))
        assert nll[i, 0].item() == pytest.approx(want, rel=1e-4) and nll[i, 1].item() == len(ci)
    # an empty continuation scores (0, 0) without moving the others' rows
    again = sas.forward.likelihood.continuation_nll(tiny, [prompts[0], "Nothing follows", prompts[1]],
                                                    [conts[0], "", conts[1]], batch_size=2)
    assert again[1].tolist() == [0.0, 0.0] and torch.allclose(again[[0, 2]], nll, rtol=1e-5)


def test_target_logprobs_stream_the_vocabulary_as_log_softmax_would(tiny):
    """The streamed log-sum-exp over vocabulary chunks equals log_softmax of the full logits at the targets, with
    the unembedding's bias and a logit softcap (Gemma 2) applied per chunk, whatever the chunk size."""
    from sas.forward.run import logits_at, target_logprobs

    g = torch.Generator().manual_seed(0)
    resid = torch.randn(7, tiny.cfg.d_model, generator=g) * 3
    targets = torch.randint(0, tiny.cfg.d_vocab, (7,), generator=g)
    targets[0], targets[1] = 0, tiny.cfg.d_vocab - 1  # the first and the last chunk's edges
    bias, cap = tiny.b_U.clone(), tiny.cfg.output_logits_soft_cap
    try:
        with torch.no_grad():
            tiny.b_U.copy_(torch.randn(tiny.cfg.d_vocab, generator=g))
        tiny.cfg.output_logits_soft_cap = 5.0
        with torch.inference_mode():
            want = torch.log_softmax(logits_at(tiny, resid).float(), -1).gather(-1, targets[:, None])[:, 0]
            for chunk in (1000, 4096, tiny.cfg.d_vocab):
                assert torch.allclose(target_logprobs(tiny, resid, targets, chunk), want, atol=1e-5)
    finally:
        with torch.no_grad():
            tiny.b_U.copy_(bias)
        tiny.cfg.output_logits_soft_cap = cap


def test_mask_words():
    from sas.evaluation.concept import mask_words

    v = SteeringVector({1: _dir(0, 2)}, "tiny", "actadd", positions="front",
                       settings={"positive": "Love", "negative": "Hate"})
    assert mask_words(v).sub("", "Lovely day, I hated it; loving, hateful. Glove.") == " day, I  it; , . Glove."
    assert mask_words(_vec()) is None
