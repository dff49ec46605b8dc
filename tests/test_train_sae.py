"""sas train-sae: the TopK SAE's sparse gradients, its sae-lens export, the data plan, checkpoints and resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sas.training.tokens import corpus_files, make_plan
from sas.training.topk import TopKSAE
from sas.training.trainer import TrainConfig, Trainer, check_settings, export, latest_checkpoint


def _dense_reference(sae: TopKSAE, x: torch.Tensor, dead: torch.Tensor, k_aux: int):
    """The same losses with dense autograd, for the gradient check."""
    xs = x * sae.scale
    xc = xs - sae.b_dec.detach()
    pre = xc @ sae.W_enc.T + sae.b_enc
    i = pre.topk(sae.k, dim=-1).indices
    acts = torch.zeros_like(pre).scatter(1, i, torch.relu(pre.gather(1, i)))
    err = xs - (acts @ sae.W_dec + sae.b_dec)
    var = (xs - xs.mean(0)).pow(2).sum()
    ai = pre.detach().masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1).indices
    aa = torch.zeros_like(pre).scatter(1, ai, torch.relu(pre.gather(1, ai)))
    aux = min(int(dead.sum()) / k_aux, 1.0) * (aa @ sae.W_dec - err.detach()).pow(2).sum() / var
    return err.pow(2).sum() / var, aux


def test_sparse_backward_equals_dense_autograd():
    torch.manual_seed(0)
    sae = TopKSAE(16, 64, 4, matmul_dtype=torch.float32)
    x = torch.randn(32, 16) * 3 + 1
    sae.init_from(x)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:20] = True
    fvu, aux, _ = sae(x, dead=dead)
    (fvu + aux).backward()
    sparse = [p.grad.clone() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)]
    sae.zero_grad()
    f2, a2 = _dense_reference(sae, x, dead, k_aux=8)
    assert torch.allclose(fvu, f2) and torch.allclose(aux, a2)
    (f2 + a2).backward()
    for got, want in zip(sparse, (sae.W_enc.grad, sae.b_enc.grad, sae.W_dec.grad, sae.b_dec.grad)):
        assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()


def test_export_is_the_same_topk_in_raw_units(tmp_path):
    """The folded sae-lens SAE is a TopK SAE that reads raw residuals and gives the training codes divided by the
    scale, also on rows whose norm is ten times the mean (one global threshold fails exactly there)."""
    from sae_lens import SAE

    torch.manual_seed(1)
    sae = TopKSAE(16, 64, 4, matmul_dtype=torch.float32)
    x = torch.randn(50, 16) * 40 + 7
    sae.init_from(x)
    x[:5] *= 10  # Gemma's rare high-norm tokens
    cfg = TrainConfig(saes=[(3, 64)], k=4, tokens=1000)
    tr = Trainer(cfg, 16)
    tr.saes["L3-64"].load_state_dict(sae.state_dict())
    folder = export(tr, tmp_path, cfg)[0]
    sl = SAE.load_from_disk(folder)
    assert sl.cfg.metadata.hook_name == "blocks.3.hook_resid_post"
    assert sl.cfg.architecture() == "topk" and sl.cfg.k == 4
    want = sae.encode(x) / sae.scale
    got = sl.encode(x)
    assert torch.allclose(got, want, atol=1e-4 * float(x.norm(dim=-1).max()))
    assert ((got > 0).sum(-1) <= 4).all()
    recon = (want * sae.scale) @ sae.W_dec + sae.b_dec
    assert torch.allclose(sl.decode(got), recon / sae.scale, atol=1e-3)


def test_plan_is_deterministic_mixes_prompts_and_refuses_a_small_corpus():
    corpus = np.arange(10_000, dtype=np.uint32)
    prompts = [[1] * n for n in range(3, 40)]
    a = make_plan(corpus, prompts, 5_000, context=16, batch_rows=4, prompt_frac=0.2, bos=2, seed=3)
    b = make_plan(corpus, prompts, 5_000, context=16, batch_rows=4, prompt_frac=0.2, bos=2, seed=3)
    assert a.batches == b.batches
    n = sum(a.n_tokens(i) for i in range(len(a.batches)))
    n_prompt = sum(len(prompts[j]) for batch in a.batches for kind, j in batch if kind == "p")
    assert 5_000 <= n < 5_000 + 16 * 4 and abs(n_prompt / n - 0.2) < 0.02
    kinds = [batch[0][0] for batch in a.batches]
    assert "p" in kinds[: len(kinds) // 2] and "p" in kinds[len(kinds) // 2:]  # spread over the run
    tokens, keep = a.tokens(0, pad=0)
    assert (tokens[:, 0] == 2).all() and not keep[:, 0].any()
    with pytest.raises(ValueError, match="fewer than"):
        make_plan(corpus, prompts, 50_000, context=16, batch_rows=4, prompt_frac=0.2, bos=2)


def test_held_out_text_is_refused(tmp_path):
    held = tmp_path / "enwiki-2014-heldout"
    held.mkdir()
    (held / "a.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="held-out"):
        corpus_files([held])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "enwiki2014-heldout-0026.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="held-out"):
        corpus_files([mixed])


def test_other_settings_are_refused_by_name(tmp_path):
    check_settings(tmp_path, {"k": 64, "lr": 4e-4})
    check_settings(tmp_path, {"k": 64, "lr": 4e-4})
    with pytest.raises(ValueError, match=r"k: checkpoint has 64, asked 32"):
        check_settings(tmp_path, {"k": 32, "lr": 4e-4})


def test_checkpoint_round_trip_and_no_half_checkpoint_is_read(tmp_path):
    cfg = TrainConfig(saes=[(1, 64)], k=4, tokens=10_000, sae_batch=64, refill=1)
    tr = Trainer(cfg, 16)
    x = torch.randn(256, 16)
    tr.train_on({1: x}, log=lambda row: None)
    tr.batch = 1
    tr.save(tmp_path)
    (tmp_path / "ckpt-000000099999.tmp").mkdir()  # a checkpoint killed while being written
    (tmp_path / "ckpt-000000099998").mkdir()  # no state.json: incomplete
    ck = latest_checkpoint(tmp_path)
    assert ck.name == f"ckpt-{tr.tokens:012d}"
    tr2 = Trainer(cfg, 16)
    tr2.load(ck)
    assert tr2.state() == tr.state()
    for a, b in zip(tr.saes["L1-64"].state_dict().values(), tr2.saes["L1-64"].state_dict().values()):
        assert torch.equal(a, b)
    # the same next step from the original and the reloaded trainer
    tr.train_on({1: x}, log=lambda row: None)
    tr2.train_on({1: x}, log=lambda row: None)
    assert torch.equal(tr.saes["L1-64"].W_enc, tr2.saes["L1-64"].W_enc)


def test_ship_writes_16_bit_weights_and_a_card_that_loads(tmp_path):
    from sas.load import saes as S

    cfg = TrainConfig(saes=[(3, 64)], k=4, tokens=1000)
    tr = Trainer(cfg, 16)
    tr.train_on({3: torch.randn(128, 16) * 5}, log=lambda row: None)
    folder = export(tr, tmp_path / "final", cfg)[0]
    from sas.training.ship import ship

    card_path = ship(folder, tmp_path / "saes", "toy-L3-topk")
    card = json.loads(card_path.read_text())
    assert card["weights_dtype"]["W_enc"] in ("float16", "bfloat16") and card["metrics"] == {}
    assert card["training"]["tokens_seen"] == tr.tokens and card["hook"] == "blocks.3.hook_resid_post"
    assert card["sha256"] == S.sha256(tmp_path / "saes" / "toy-L3-topk" / S.WEIGHTS)
    assert "default" not in card and json.loads(ship(folder, tmp_path / "saes", "toy-L3-topk", default=True)
                                                .read_text())["default"] is True


ROOT = Path(__file__).resolve().parents[1]
TEXTS = ROOT / "sas" / "data" / "text"


def _train_cmd(out: Path, corpus: Path) -> list[str]:
    return [sys.executable, "-m", "sas.cli", "train-sae", "--sae", "2:256", "--sae", "3:128", "--k", "8",
            "--tokens", "3000", "--corpus", str(corpus), "--data", str(ROOT / "sas" / "data"), "--batch-rows", "4",
            "--refill", "2", "--sae-batch", "256", "--checkpoint-minutes", "0.0001", "--out", str(out), "--threads", "1"]


@pytest.mark.slow
def test_kill_9_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path):
    """A run killed with SIGKILL right after its first checkpoint, rerun with the same command, ends with the same
    SAEs, bit for bit, as a run never interrupted; other settings on that folder are refused by name."""
    import os
    import signal
    import time

    corpus = tmp_path / "corpus.jsonl"
    texts = [json.loads(line)["text"] for f in sorted(TEXTS.glob("*.jsonl")) for line in open(f) if line.strip()]
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:60]))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    whole = subprocess.run(_train_cmd(tmp_path / "whole", corpus), capture_output=True, text=True, env=env, cwd=ROOT)
    assert whole.returncode == 0, whole.stderr[-2000:]
    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(run, corpus), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=ROOT)
    deadline = time.time() + 600
    while latest_checkpoint(run) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = latest_checkpoint(run)
    assert json.loads((first / "state.json").read_text())["tokens"] < 3000
    again = subprocess.run(_train_cmd(run, corpus), capture_output=True, text=True, env=env, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in again.stdout
    for name in ("L2-256", "L3-128"):
        from safetensors.torch import load_file

        a = load_file(tmp_path / "whole" / "final" / name / "sae_weights.safetensors")
        b = load_file(run / "final" / name / "sae_weights.safetensors")
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    other = subprocess.run([*_train_cmd(run, corpus), "--k", "4"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert other.returncode != 0 and "k: checkpoint has 8, asked 4" in other.stderr


def test_a_full_disk_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import errno

    cfg = TrainConfig(saes=[(1, 64)], k=4, tokens=10_000, sae_batch=64)
    tr = Trainer(cfg, 16)
    tr.train_on({1: torch.randn(128, 16)}, log=lambda row: None)
    good = tr.save(tmp_path)
    tr.train_on({1: torch.randn(128, 16)}, log=lambda row: None)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=f"No space left.*{good.name} is intact.*rerun the same command"):
        tr.save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [good.name]
    assert latest_checkpoint(tmp_path) == good
