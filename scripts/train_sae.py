"""Train BatchTopK SAEs (saved as JumpReLU) on a TransformerLens model's residual stream, with sae-lens.

Three resumable phases, all under ``--out``:

1. ``acts/``: run the model once, only up to the deepest layer needed (``stop_at_layer``), on a mix of
   a local text corpus and the prompts steering reads (CAA A/B prompts of the *generate* splits and the
   sentiment prompts), and cache the residual activations of every layer as bfloat16 shards. BOS and
   other special tokens are left out: Gemma's BOS residual is an outlier that no SAE should spend
   capacity on. The model itself runs in bfloat16 (2x faster on AVX-512 BF16 CPUs), so bfloat16
   shards lose nothing (``--dtype float32`` on a CPU without bfloat16 instructions, which emulates it).
2. ``checkpoints/``: train all SAEs in lockstep on the cached activations with sae-lens's
   ``MultiSAETrainer``; activations are scaled to norm sqrt(d_model) and ``b_dec`` starts at the mean
   (Gemma's residual mean is large, |mean| ~ 6000). Checkpoints are written regularly; rerunning the
   same command resumes from the newest one.
3. ``final/<name>/``: inference SAEs (JumpReLU, the scaling folded in). ``--export-only`` writes them
   from the newest checkpoint, for a run that was cut short.

Example (what shipped the SAEs in ``saes/``)::

    python scripts/train_sae.py --corpus ../shared/data/corpus/enwiki-2014 \
        --sae 9:4096 --sae 5:4096 --sae 9:16384 --k 64 --tokens 2000000 --out runs/gemma-sae
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # the default --data: the project's staged data sets


# ----------------------------------------------------------------------------------------- data
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sas.training.tokens import corpus_files, corpus_texts  # noqa: E402  (one reader of the corpus)
from sas.hashing import held_out_fifth  # noqa: E402
from sas.files import write_atomic, write_text  # noqa: E402


def data_dir(path: Path) -> Path:
    """``path`` if it holds the CAA data (``caa/datasets/`` as staged, or ``caa/`` as shipped in ``sas/data``)."""
    if not (path / "caa" / "datasets").is_dir() and not (path / "caa" / "generate").is_dir():
        raise FileNotFoundError(f"no CAA data under {path}: pass --data a folder holding caa/datasets/ and sentiment/ "
                                "(../shared/data) or the package's own sas/data")
    return path


def steering_prompts(data: Path = DATA, seed: int = 0) -> list[str]:
    """The contexts steering reads: CAA A/B prompts (generate splits only; both answers) and the
    sentiment prompts whose md5 puts them in the training 80% (the other 20% stay unseen), from ``data``."""
    prompts = []
    caa = data / "caa" / "datasets" if (data / "caa" / "datasets").is_dir() else data / "caa"
    for f in sorted((caa / "generate").glob("*/generate_dataset.json")):
        for item in json.loads(f.read_text()):
            for ans in (item["answer_matching_behavior"], item["answer_not_matching_behavior"]):
                prompts.append(f"{item['question']}\n\nAnswer: {ans}")
    for f in sorted((data / "sentiment").glob("*_prompts.jsonl")):
        for line in open(f):
            row = json.loads(line)
            if not held_out_fifth(row["prompt"]["text"]):  # 80% train
                prompts.append(row["prompt"]["text"] + row["continuation"]["text"])
    random.Random(seed).shuffle(prompts)
    return prompts


def token_sequences(tokenizer, files: list[Path], context: int, prompt_frac: float, seed: int = 0, data: Path = DATA):
    """Yield token-id lists (BOS first, at most ``context`` long): corpus chunks, with steering prompts
    mixed in so that about ``prompt_frac`` of the tokens come from prompts (until they run out)."""
    bos = tokenizer.bos_token_id
    prompts = iter(steering_prompts(data, seed)) if prompt_frac > 0 else iter(())
    n_corpus = n_prompt = 0
    for text in corpus_texts(files):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for i in range(0, len(ids), context - 1):
            chunk = [bos] + ids[i:i + context - 1]
            if len(chunk) < 8:
                continue
            n_corpus += len(chunk)
            yield chunk
            while n_prompt < prompt_frac * (n_corpus + n_prompt):
                p = next(prompts, None)
                if p is None:
                    prompt_frac = 0.0
                    break
                seq = [bos] + tokenizer(p, add_special_tokens=False)["input_ids"][:context - 1]
                n_prompt += len(seq)
                yield seq


@torch.no_grad()
def residual_batch(model, seqs: list[list[int]], hooks: list[str], special_ids: set[int]) -> dict[str, torch.Tensor]:
    """Run ``model`` on right-padded sequences up to the deepest hook; return ``{hook: [n_tokens, d_model]}``
    for the real, non-special tokens (causal attention: right padding does not change real tokens)."""
    width = max(map(len, seqs))
    tokens = torch.zeros(len(seqs), width, dtype=torch.long)
    keep = torch.zeros(len(seqs), width, dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = torch.tensor(s)
        keep[i, :len(s)] = True
    for sid in special_ids:
        keep &= tokens != sid
    last = max(int(h.split(".")[1]) for h in hooks)
    _, cache = model.run_with_cache(tokens, stop_at_layer=last + 1, names_filter=lambda n: n in hooks)
    return {h: cache[h][keep].to(torch.bfloat16) for h in hooks}


def extract(model, files, hooks, n_tokens, out: Path, context=128, batch_seqs=16, prompt_frac=0.2,
            shard_tokens=1 << 16, seed=0, data: Path = DATA) -> None:
    """Cache residual activations of ``n_tokens`` tokens to ``out/shard_XXXXX.pt`` (resumes)."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    shards = sorted(out.glob("shard_*.pt"))
    done_tokens = sum(torch.load(s, weights_only=True)["n_tokens"] for s in shards)
    done_seqs = torch.load(shards[-1], weights_only=True)["seqs_consumed"] if shards else 0
    if done_tokens >= n_tokens:
        return
    tok = model.tokenizer
    special = set(tok.all_special_ids)
    stream = token_sequences(tok, files, context, prompt_frac, seed, data)
    for _ in range(done_seqs):  # deterministic stream: skip what the existing shards hold
        next(stream)
    buf: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    n_buf, n_seqs, t0 = 0, done_seqs, time.time()
    bar = tqdm(total=n_tokens, initial=done_tokens, desc="activations", unit="tok", mininterval=10)
    batch: list[list[int]] = []
    for seq in stream:
        batch.append(seq)
        if len(batch) < batch_seqs:
            continue
        acts = residual_batch(model, batch, hooks, special)
        n_seqs += len(batch)
        batch = []
        for h in hooks:
            buf[h].append(acts[h])
        n = acts[hooks[0]].shape[0]
        n_buf += n
        bar.update(n)
        if n_buf >= shard_tokens or done_tokens + n_buf >= n_tokens:
            path = out / f"shard_{len(shards):05d}.pt"
            torch.save({"acts": {h: torch.cat(buf[h]) for h in hooks}, "n_tokens": n_buf,
                        "seqs_consumed": n_seqs}, str(path) + ".tmp")
            os.replace(str(path) + ".tmp", path)  # a shard on disk is always complete
            shards.append(path)
            done_tokens += n_buf
            buf, n_buf = {h: [] for h in hooks}, 0
            print(f"[extract] {path.name}: {done_tokens} tokens, {bar.format_dict['rate'] or 0:.0f} tok/s",
                  flush=True)
            if done_tokens >= n_tokens:
                break
    bar.close()
    if done_tokens < n_tokens:
        print(f"[extract] the corpus ran out at {done_tokens} tokens (asked for {n_tokens})", flush=True)
    print(f"[extract] done in {time.time() - t0:.0f} s", flush=True)


def shard_batches(acts_dir: Path, hooks: list[str], batch_size: int, skip_samples: int = 0, seed: int = 0,
                  shards_at_once: int = 4):
    """Endless iterator of ``{hook: float32 [batch_size, d_model]}`` from the cached shards, shuffled across
    ``shards_at_once`` shards at a time; epoch e uses a different order. Skips ``skip_samples`` (resume)."""
    shards = sorted(acts_dir.glob("shard_*.pt"))
    if not shards:
        raise FileNotFoundError(f"no activation shards in {acts_dir}")
    epoch, skipped = 0, 0
    while True:
        rng = random.Random(seed + epoch)
        order = shards[:]
        rng.shuffle(order)
        for i in range(0, len(order), shards_at_once):
            group = [torch.load(s, weights_only=True)["acts"] for s in order[i:i + shards_at_once]]
            acts = {h: torch.cat([g[h] for g in group]) for h in hooks}
            perm = torch.randperm(acts[hooks[0]].shape[0], generator=torch.Generator().manual_seed(seed + epoch * 1000 + i))
            for j in range(0, len(perm) - batch_size + 1, batch_size):
                if skipped < skip_samples:
                    skipped += batch_size
                    continue
                idx = perm[j:j + batch_size]
                yield {h: acts[h][idx].float() for h in hooks}
        epoch += 1


# ------------------------------------------------------------------------------------- training
def sae_name(hook: str, width: int) -> str:
    return f"L{hook.split('.')[1]}-w{width}"


def build_trainer(specs: list[tuple[str, int]], args, acts_dir: Path, ckpt_dir: Path):
    """Return a sae-lens ``MultiSAETrainer`` over the given (hook, width) SAEs, resumed if a checkpoint exists."""
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, LoggingConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    hooks = sorted({h for h, _ in specs})
    first = torch.load(sorted(acts_dir.glob("shard_*.pt"))[0], weights_only=True)["acts"]
    d_in = first[hooks[0]].shape[1]
    saes, hook_names = {}, {}
    for hook, width in specs:
        cfg = BatchTopKTrainingSAEConfig(
            d_in=d_in, d_sae=width, k=args.k, dtype="float32", device="cpu", apply_b_dec_to_input=True,
            normalize_activations="expected_average_only_in", aux_loss_coefficient=args.aux_coef,
        )
        cfg.metadata.model_name = args.model
        cfg.metadata.hook_name = hook
        cfg.metadata.context_size = args.context
        name = sae_name(hook, width)
        saes[name], hook_names[name] = BatchTopKTrainingSAE(cfg), hook
    steps = args.train_tokens // args.batch
    tcfg = SAETrainerConfig(
        total_training_samples=steps * args.batch, train_batch_size_samples=args.batch, lr=args.lr, lr_end=args.lr / 10,
        lr_scheduler_name="constant", lr_warm_up_steps=min(100, steps // 10), lr_decay_steps=steps // 5,
        dead_feature_window=max(1, min(250, steps // 4)), feature_sampling_window=max(1, min(500, steps // 2)),
        n_checkpoints=args.checkpoints, checkpoint_path=str(ckpt_dir), save_final_checkpoint=True, autocast=args.autocast,
        logger=LoggingConfig(log_to_wandb=False),
    )
    done = latest_checkpoint(ckpt_dir)
    skip = 0
    if done is not None:
        skip = json.loads((done / "progress.json").read_text())["n_training_samples"]
    provider = shard_batches(acts_dir, hooks, args.batch, skip_samples=skip, seed=args.seed)
    progress_log = open(ckpt_dir.parent / "train_log.jsonl", "a")

    def on_checkpoint(checkpoint_path):
        if checkpoint_path is not None:
            (Path(checkpoint_path) / "progress.json").write_text(json.dumps(
                {"n_training_samples": trainer.n_training_samples, "n_training_steps": trainer.n_training_steps}))

    trainer = MultiSAETrainer(cfg=tcfg, saes=saes, hook_names=hook_names, data_provider=provider,
                              save_checkpoint_fn=on_checkpoint)
    if done is not None:
        trainer.load_checkpoint(done)
        trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t >= trainer.n_training_samples]
        print(f"[train] resumed from {done} at {trainer.n_training_samples} samples", flush=True)
    else:
        # b_dec starts at the (scaled) mean, and the scale is fixed here so fit() does not re-estimate it
        n_cached = sum(torch.load(s, weights_only=True)["n_tokens"] for s in acts_dir.glob("shard_*.pt"))
        sample = next(shard_batches(acts_dir, hooks, min(8192, n_cached), seed=args.seed + 99))
        for name, t in trainer.trainers.items():
            x = sample[hook_names[name]]
            t.activation_scaler.scaling_factor = math.sqrt(d_in) / x.norm(dim=-1).mean().item()
            saes[name].b_dec.data = (x * t.activation_scaler.scaling_factor).mean(0)
    _log_steps(trainer, progress_log, every=args.log_every)
    return trainer


def _log_steps(trainer, log, every: int) -> None:
    """Wrap each per-SAE ``step`` to append local metrics (loss, mse, L0, explained variance) to a jsonl file."""
    for name, t in trainer.trainers.items():
        orig = t.step

        def step(batch, _orig=orig, _name=name, _t=t):
            out = _orig(batch)
            if _t.n_training_steps % every == 0:
                with torch.no_grad():
                    x = out.sae_in
                    ev = 1 - (out.sae_out - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
                    row = {"sae": _name, "step": _t.n_training_steps, "samples": _t.n_training_samples,
                           "time": time.time(), "loss": out.loss.item(), "l0": (out.feature_acts > 0).sum(-1).float().mean().item(),
                           "explained_variance": ev.item(), "dead": _t.dead_neurons.float().mean().item(),
                           **{k: v.item() for k, v in out.losses.items()}}
                log.write(json.dumps(row) + "\n")
                log.flush()
            return out

        t.step = step


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint (one with ``progress.json``), or None."""
    done = [p for p in ckpt_dir.glob("*") if (p / "progress.json").exists()]
    return max(done, key=lambda p: json.loads((p / "progress.json").read_text())["n_training_samples"]) if done else None


def export(ckpt: Path, out: Path, extra: dict) -> list[Path]:
    """Write inference (JumpReLU) SAEs from a multi-SAE checkpoint, the activation scale folded in."""
    from sae_lens import BatchTopKTrainingSAE
    from sae_lens.training.activation_scaler import ActivationScaler

    written = []
    progress = json.loads((ckpt / "progress.json").read_text())
    for sub in sorted(p for p in ckpt.iterdir() if p.is_dir()):
        sae = BatchTopKTrainingSAE.load_from_disk(sub)
        scaler = ActivationScaler()
        scaler.load(sub / "activation_scaler.json")
        if scaler.scaling_factor is not None and "final_" not in ckpt.name:
            sae.fold_activation_norm_scaling_factor(scaler.scaling_factor)
        dest = out / sub.name
        sae.save_inference_model(dest)
        (dest / "training.json").write_text(json.dumps({**extra, **progress, "checkpoint": str(ckpt)}, indent=1))
        written.append(dest)
    return written


def ship(final: Path, saes_dir: Path, model: str, status: str) -> str:
    """Copy an exported SAE into the registry ``saes/<model>-L<layer>-<width/1024>k/`` with its card.

    The weight matrices are stored in 16 bits (float16, or bfloat16 where float16 would lose more: the folded
    activation scale can push encoder weights towards float16's subnormals); the small bias and threshold
    vectors stay float32. Returns the registry name.
    """
    import datetime

    from safetensors.torch import load_file, save_file

    from sas.hashing import sha256

    from sas.load.saes import WEIGHTS

    cfg = json.loads((final / "cfg.json").read_text())
    training = json.loads((final / "training.json").read_text())
    hook = cfg["metadata"]["hook_name"]
    width = f"{cfg['d_sae'] // 1024}k" if cfg["d_sae"] % 1024 == 0 else str(cfg["d_sae"])
    name = f"{model}-L{hook.split('.')[1]}-{width}"
    state = load_file(final / WEIGHTS)
    for key in ("W_enc", "W_dec"):
        w = state[key].float()
        err = {dt: ((w - w.to(dt).float()).norm() / w.norm()).item() for dt in (torch.float16, torch.bfloat16)}
        state[key] = w.to(min(err, key=err.get)).contiguous()
    dest = saes_dir / name
    dest.mkdir(parents=True, exist_ok=True)
    write_atomic(dest / WEIGHTS, lambda tmp: save_file(state, tmp))
    write_text(dest / "cfg.json", json.dumps(cfg))
    log = final.parent.parent / "train_log.jsonl"
    if training.get("train_tok_per_s") is None and log.exists():  # measured from the local metrics log
        rows = [r for r in map(json.loads, open(log)) if r["sae"] == final.name]
        if len(rows) > 1:
            training["train_tok_per_s"] = (rows[-1]["samples"] - rows[0]["samples"]) / (rows[-1]["time"] - rows[0]["time"])
    card_path = saes_dir / f"{name}.json"
    old = json.loads(card_path.read_text()) if card_path.exists() else {}
    card = {
        "name": name, "model": model, "hook": hook, "architecture": cfg["architecture"],
        "trained_as": f"batchtopk (k={training['k']}), saved as jumprelu by sae-lens", "d_in": cfg["d_in"],
        "width": cfg["d_sae"], "k": training["k"],
        "threshold_mean": state["threshold"].float().mean().item() if "threshold" in state else None,
        "weights_dtype": {k: str(v.dtype).replace("torch.", "") for k, v in state.items()},
        "status": status,
        "training": {
            "tokens_seen": training["n_training_samples"], "tokens_planned": training["train_tokens"],
            "steps": training["n_training_steps"], "batch_tokens": training["batch"], "lr": training["lr"],
            "data": {"corpus": training["corpus"], "prompt_frac": training["prompt_frac"],
                     "prompts": "CAA A/B prompts of the generate splits (question + '\\n\\nAnswer: (A)' and (B)); "
                                "sentiment prompts + continuations whose md5 % 5 != 0",
                     "excluded": "BOS and other special tokens; no held-out text, no CAA test split"},
            "context": training["context"], "command": training["command"],
            "tok_per_s": training.get("train_tok_per_s"),
            "throughput_note": "tokens/s of the SAE training steps of this run (all SAEs of the run in lockstep, "
                               "bfloat16 autocast, 1 thread, on a 2-core CPU shared with other jobs); activation "
                               "caching ran separately at 1,000-1,700 tokens/s (model in bfloat16 up to layer 9)",
        },
        "date": datetime.date.today().isoformat(), "folder": name, "sha256": sha256(dest / WEIGHTS),
    }
    # metrics describe weights: keep them only if the weights did not change (else rerun evaluate_sae.py)
    card["metrics"] = old.get("metrics", {}) if old.get("sha256") == card["sha256"] else {}
    if training.get("export_command"):
        card["training"]["export_command"] = training["export_command"]
    write_text(card_path, json.dumps(card, indent=1) + "\n")
    return name


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", action="append", required=True, help="folder or file of jsonl/txt text (repeatable)")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--sae", action="append", default=None, metavar="LAYER:WIDTH",
                    help="an SAE to train, e.g. 9:4096 (repeatable); default: --layer x --width")
    ap.add_argument("--layer", type=int, nargs="*", default=[9])
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--k", type=float, default=64, help="BatchTopK: mean active features per token")
    ap.add_argument("--tokens", type=int, default=2_000_000, help="activations to cache (and train on per epoch)")
    ap.add_argument("--train-tokens", type=int, default=None, help="tokens to train on (default: --tokens)")
    ap.add_argument("--acts", type=Path, default=None, help="activation cache folder (default: OUT/acts); "
                    "share one cache between runs that train different SAEs")
    ap.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                    help="the model's dtype for caching activations (bfloat16: what shipped the first SAEs; float32 is "
                         "faster on a CPU without bfloat16 instructions); the cache holds bfloat16 either way")
    ap.add_argument("--autocast", action="store_true", help="bfloat16 matmuls in SAE training (1.4x on AVX-512 BF16)")
    ap.add_argument("--batch", type=int, default=1024, help="tokens per training step")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--aux-coef", type=float, default=1.0, help="weight of the TopK auxiliary loss that revives "
                    "dead features (1/32 left 39%% of a 4096-wide SAE dead after 500k tokens)")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--prompt-frac", type=float, default=0.2, help="share of tokens from CAA/sentiment prompts")
    ap.add_argument("--data", type=Path, default=DATA, help="folder of the CAA and sentiment prompt sets "
                    "(default ../shared/data; sas/data, shipped, has the CAA sets and the neutral sentiment prompts)")
    ap.add_argument("--checkpoints", type=int, default=20)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--extract-only", action="store_true", help="fill the activation cache and stop")
    ap.add_argument("--export-only", action="store_true", help="write final/ from the newest checkpoint and stop")
    ap.add_argument("--ship", type=Path, default=None, metavar="SAES_DIR",
                    help="after export, copy the SAEs into this registry folder (16-bit weights + cards)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    specs = [(f"blocks.{s.split(':')[0]}.hook_resid_post", int(s.split(":")[1])) for s in args.sae] if args.sae \
        else [(f"blocks.{layer}.hook_resid_post", args.width) for layer in args.layer]
    hooks = sorted({h for h, _ in specs})
    args.train_tokens = args.train_tokens or args.tokens
    acts_dir, ckpt_dir = args.acts or args.out / "acts", args.out / "checkpoints"
    extra = {"model": args.model, "corpus": [str(c) for c in args.corpus], "prompt_frac": args.prompt_frac,
             "tokens_cached": args.tokens, "aux_coef": args.aux_coef, "train_tokens": args.train_tokens, "k": args.k, "batch": args.batch, "lr": args.lr,
             "context": args.context,
             "command": "python scripts/train_sae.py " + " ".join(map(str, argv if argv is not None else sys.argv[1:]))}
    command_file = args.out / "command.txt"  # the training command, for the card of a later --export-only
    if args.export_only:
        if command_file.exists():
            extra["export_command"], extra["command"] = extra["command"], command_file.read_text().strip()
        ckpt = latest_checkpoint(ckpt_dir)
        if ckpt is None:
            raise SystemExit(f"no checkpoint in {ckpt_dir}")
        status = "complete" if ckpt.name.startswith("final_") else \
            f"partial: checkpoint {ckpt.name} of a run planned for {args.train_tokens} tokens; resume with the same command"
        for p in export(ckpt, args.out / "final", extra):
            print(f"[export] {p}")
            if args.ship:
                print(f"[ship] {ship(p, args.ship, args.model, status)}")
        return

    files = corpus_files(args.corpus)
    data = data_dir(args.data) if args.prompt_frac > 0 else args.data
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))
    command_file.write_text(extra["command"] + "\n")
    shards = sorted(acts_dir.glob("shard_*.pt"))
    cached = sum(torch.load(s, weights_only=True)["n_tokens"] for s in shards)
    if cached < args.tokens:
        from sas.load.models import load_model

        t0 = time.time()
        model = load_model(args.model, dtype=args.dtype)
        print(f"[extract] model loaded in {time.time() - t0:.0f} s", flush=True)
        extract(model, files, hooks, args.tokens, acts_dir, context=args.context, prompt_frac=args.prompt_frac,
                seed=args.seed, data=data)
        del model
    if args.extract_only:
        return
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(specs, args, acts_dir, ckpt_dir)
    t0, s0 = time.time(), trainer.n_training_samples
    trainer.fit()
    rate = (trainer.n_training_samples - s0) / max(time.time() - t0, 1e-9)
    print(f"[train] {trainer.n_training_samples} samples, {rate:.0f} tok/s (all SAEs in lockstep)", flush=True)
    final = latest_checkpoint(ckpt_dir)
    for p in export(final, args.out / "final", {**extra, "train_tok_per_s": rate}):
        print(f"[export] {p}")
        if args.ship:
            print(f"[ship] {ship(p, args.ship, args.model, 'complete')}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
