"""``sas train-sae``: train TopK SAEs on several layers and widths from one streaming forward pass (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _sae(s: str) -> tuple[int, int]:
    try:
        layer, width = (int(x) for x in s.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYER:WIDTH such as 9:16384, got {s!r}")
    if layer < 0 or width < 1:
        raise argparse.ArgumentTypeError(f"expected a layer >= 0 and a width >= 1, got {s!r}")
    return layer, width


def _positive(kind):
    def parse(s: str):
        v = kind(float(s)) if kind is int else kind(s)
        if not v > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}")
        return v
    return parse


def add_parser(sub) -> None:
    from .trainer import TrainConfig

    d = TrainConfig(saes=[])
    p = sub.add_parser("train-sae", help="train TopK SAEs (several layers and widths, one forward pass; resumable)",
                       description=__doc__ + "\n\nRerun the same command after a stop or kill -9 to resume.")
    p.add_argument("--sae", type=_sae, action="append", required=True, metavar="LAYER:WIDTH",
                   help="an SAE to train, e.g. 9:16384 (repeat for more; all share one forward pass)")
    p.add_argument("--model", default=d.model)
    p.add_argument("--tokens", type=_positive(int), default=d.tokens, help="training tokens (e.g. 3e7)")
    p.add_argument("--k", type=_positive(int), default=d.k, help="active latents per token")
    p.add_argument("--corpus", action="append", default=None,
                   help="folder or file of jsonl ('text' field) or txt; repeatable (default: ../shared/data/corpus/"
                        "enwiki-2014 and enwiki-2014-ext); held-out text is refused")
    p.add_argument("--data", default=d.data, help="folder with caa/ and sentiment/ prompts (steering's contexts)")
    p.add_argument("--prompt-frac", type=float, default=d.prompt_frac, help="share of tokens from those prompts")
    p.add_argument("--lr", type=_positive(float), default=d.lr, help="Adam lr at width 16k (scaled by 1/sqrt(width))")
    p.add_argument("--sae-batch", type=_positive(int), default=d.sae_batch, help="tokens per SAE step")
    p.add_argument("--batch-rows", type=_positive(int), default=d.batch_rows, help="sequences per forward batch")
    p.add_argument("--refill", type=_positive(int), default=d.refill, help="forward batches shuffled together")
    p.add_argument("--context", type=_positive(int), default=d.context, help="tokens per sequence, BOS included")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default=d.dtype,
                   help="the model's forward pass and the encoder's product (bfloat16: 2x here)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, default=None, help="run folder (default $SAS_CACHE/train/<name>)")
    p.add_argument("--checkpoint-minutes", type=_positive(float), default=5.0)
    p.add_argument("--max-minutes", type=_positive(float), default=None, help="stop (checkpointed) after this long")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.set_defaults(fn=run)


def run(args) -> None:
    import torch

    from .trainer import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    kw = {} if args.corpus is None else {"corpus": args.corpus}
    cfg = TrainConfig(saes=args.sae, model=args.model, tokens=args.tokens, k=args.k, data=args.data,
                      prompt_frac=args.prompt_frac, lr=args.lr, sae_batch=args.sae_batch, dtype=args.dtype,
                      batch_rows=args.batch_rows, refill=args.refill, context=args.context,
                      seed=args.seed, **kw)
    bad = [(layer, w) for layer, w in cfg.saes if w < cfg.k]
    if bad:
        raise SystemExit(f"sas train-sae: width below k={cfg.k} for {bad}")
    folder = train(cfg, args.out, checkpoint_minutes=args.checkpoint_minutes, max_minutes=args.max_minutes)
    print(f"[train-sae] run folder: {folder}")
