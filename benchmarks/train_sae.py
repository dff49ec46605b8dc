"""SAE training throughput (``sas train-sae``) against a bare forward pass to the same layer, in one run.

Candidates, all on the same 4,096 tokens of corpus text (32 rows of 128, gemma-3-270m in bfloat16):

- ``forward to layer 9``: the model alone, ``stop_at_layer=10``, no hooks: the ceiling for any trainer that streams.
- ``train: 2 x 16k (L5, L9)`` and ``train: 2 x 16k + 4k``: what ``sas train-sae`` does per batch: the same forward
  pass reading the residuals, then one step of each SAE (encoder, TopK, AuxK, sparse backward, Adam).
- ``SAE step: sas TopK 16k`` against ``SAE step: sae-lens TopK 16k`` (sae-lens's ``TopKTrainingSAE`` with its
  dense decoder, the same Adam) and ``SAE step: sparsify 16k`` (EleutherAI's ``SparseCoder``: fused encoder with an
  ``index_add`` backward, ``embedding_bag`` decoder; skipped when ``eai-sparsify`` is not installed), on the same
  layer-9 activations: where the trainer's speed comes from.

Goal: the 2 x 16k trainer at least 0.6x the bare forward pass's throughput.
"""

from __future__ import annotations

import json

import torch

from .harness import Bench, Comparison, Context

N_ROWS, CONTEXT = 32, 128


def _tokens(model, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sas.training.tokens import SHARED_DATA

    path = SHARED_DATA / "corpus" / "enwiki-2014" / "enwiki2014-0000.jsonl"
    if not path.exists():  # a user without the staged corpus: the package's held-out sample reads the same
        from sas.load.data import load_text_sample

        texts = load_text_sample()
    else:
        texts = [json.loads(line)["text"] for line in open(path, encoding="utf-8")][:400]
    from sas.activations.residual import token_chunks

    tokens = token_chunks(model, texts, CONTEXT, max_tokens=rows * CONTEXT * 2)[:rows]
    keep = torch.ones_like(tokens, dtype=torch.bool)
    keep[:, 0] = False
    return tokens, keep


def _adam(params):
    return torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.999), eps=6.25e-10, fused=True)


def _setup(ctx: Context, cfg: dict):
    from sas.training.trainer import TrainConfig, Trainer, residuals

    model = ctx.model_bf16
    rows = cfg.get("train_rows", N_ROWS)
    tokens, keep = _tokens(model, rows)
    n = int(keep.sum())
    two = Trainer(TrainConfig(saes=[(5, 16384), (9, 16384)], sae_batch=n), model.cfg.d_model)
    three = Trainer(TrainConfig(saes=[(5, 16384), (9, 16384), (9, 4096)], sae_batch=n), model.cfg.d_model)
    x9 = residuals(model, tokens, keep, [9])[9]

    def forward():
        with torch.no_grad():
            model(tokens, stop_at_layer=10)
        return n

    def train(tr):
        def call():
            tr.train_on(residuals(model, tokens, keep, [5, 9]), log=lambda row: None)
            return n
        return call

    ours = Trainer(TrainConfig(saes=[(9, 16384)], sae_batch=n), model.cfg.d_model)
    ours.train_on({9: x9}, log=lambda row: None)  # initialised (scale, b_dec) as in a run

    def ours_step():
        ours.train_on({9: x9}, log=lambda row: None)
        return n

    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    sl = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=model.cfg.d_model, d_sae=16384, k=64))
    sl_opt = _adam(sl.parameters())
    x9f = x9.float() * float(ours.saes["L9-16k"].scale)

    def sae_lens_step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = sl.training_forward_pass(TrainStepInput(x9f, {}, None, 0, False))
        out.loss.backward()
        sl_opt.step()
        sl_opt.zero_grad(set_to_none=True)
        return n

    cands = {"forward to layer 9": forward, "train: 2 x 16k (L5, L9)": train(two),
             "train: 2 x 16k + 4k": train(three), "SAE step: sas TopK 16k": ours_step,
             "SAE step: sae-lens TopK 16k": sae_lens_step}
    try:
        import os

        os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
        from sparsify import SparseCoder, SparseCoderConfig
    except ImportError:
        return cands
    sp = SparseCoder(model.cfg.d_model, SparseCoderConfig(num_latents=16384, k=64))
    sp_opt = _adam(sp.parameters())
    dead = torch.zeros(16384, dtype=torch.bool)

    def sparsify_step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = sp(x9f, dead_mask=dead)
        (out.fvu + out.auxk_loss / 32).backward()
        sp.remove_gradient_parallel_to_decoder_directions()
        sp_opt.step()
        sp_opt.zero_grad(set_to_none=True)
        sp.set_decoder_norm_to_unit_norm()
        return n

    cands["SAE step: sparsify 16k"] = sparsify_step
    return cands


BENCH = Bench(
    "train_sae", _setup,
    [Comparison("train: 2 x 16k (L5, L9)", "forward to layer 9", 0.6,
                "sas train-sae with two 16k SAEs >= 0.6x the bare forward pass's throughput"),
     Comparison("train: 2 x 16k + 4k", "forward to layer 9", None, "the shipped run's three SAEs"),
     Comparison("SAE step: sas TopK 16k", "SAE step: sae-lens TopK 16k", None, "one 16k SAE step against sae-lens's"),
     Comparison("SAE step: sas TopK 16k", "SAE step: sparsify 16k", None, "... and against sparsify's SparseCoder")],
    None, repeats=5, warmup=True, memory=False,
    describe=lambda cfg: f"{cfg.get('train_rows', N_ROWS)} rows x {CONTEXT} tokens of enwiki-2014 text, gemma-3-270m "
                         "in bfloat16 (fast layout), k=64, one SAE step per candidate call on all of its tokens")
