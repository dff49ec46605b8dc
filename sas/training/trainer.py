"""Train several TopK SAEs (layers and widths) on one model from one streaming forward pass, resumably.

    sas train-sae --sae 5:16384 --sae 9:16384 --sae 9:4096 --tokens 30000000

One forward pass per batch runs the model (bfloat16 by default: 2.1x float32 here) only up to the deepest layer
asked; the residuals of a group of forward batches (``refill``, 64k tokens) are shuffled together and every SAE
takes its steps on them; then the group is dropped. Nothing is cached on disk but the tokenised corpus (4 bytes a
token) and the checkpoints.

A run lives in ``$SAS_CACHE/train/<name>/`` (outside any checkout): ``settings.json`` (what the run is; a
checkpoint made with other settings is refused, naming the difference), ``ckpt-<tokens>/`` (written to a
temporary name and renamed, so a folder under its final name is always complete; the newest two are kept),
``milestones/<tokens>/<sae>/`` (sae-lens SAEs at 1M, 3M, 10M and 30M tokens, for the learning curve) and
``log.jsonl`` (loss, L0, dead latents per SAE, throughput). Kill it at any moment and rerun the same command:
it goes on from the newest checkpoint, at most ``--checkpoint-minutes`` of work lost, on the same data order.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..files import write_text
from ..hooks import resid_hook
from ..load.models import cache_dir
from .tokens import SHARED_DATA, corpus_files, corpus_tokens, make_plan, steering_prompts
from .topk import TopKSAE

MILESTONES = (1_000_000, 3_000_000, 10_000_000, 30_000_000, 100_000_000)
CKPT_BYTES_PER_PARAM = 12  # float32 weights + Adam's two moments


@dataclass
class TrainConfig:
    """What a training run is: two runs with equal configs see the same tokens in the same order."""

    saes: list[tuple[int, int]]  # (layer, width)
    model: str = "gemma-3-270m"
    k: int = 64
    tokens: int = 30_000_000
    corpus: list[str] = field(default_factory=lambda: [str(SHARED_DATA / "corpus" / "enwiki-2014"),
                                                       str(SHARED_DATA / "corpus" / "enwiki-2014-ext")])
    data: str = str(SHARED_DATA)  # CAA + sentiment prompts (the contexts steering reads)
    prompt_frac: float = 0.1
    context: int = 128
    batch_rows: int = 32  # sequences per forward batch
    refill: int = 16  # forward batches shuffled together
    sae_batch: int = 4096  # tokens per SAE step
    lr: float = 4e-4  # at width 16k; scaled by (16384 / width) ** 0.5
    warmup_steps: int = 100
    decay_frac: float = 0.2  # the last fifth decays the lr linearly to a tenth
    auxk_alpha: float = 1 / 32
    dead_tokens: int = 1_000_000  # a latent silent this long is dead (AuxK revives it)
    dtype: str = "bfloat16"  # the model's forward pass and the encoder's product
    seed: int = 0

    @property
    def name(self) -> str:
        saes = "_".join(f"L{layer}-{width // 1024}k" for layer, width in self.saes)
        return f"{self.model}_{saes}_k{self.k}_{self.tokens / 1e6:g}M"


def sae_key(layer: int, width: int) -> str:
    return f"L{layer}-{width // 1024}k" if width % 1024 == 0 else f"L{layer}-{width}"


def run_dir(cfg: TrainConfig, out: Path | None = None) -> Path:
    return Path(out) if out is not None else cache_dir() / "train" / cfg.name


def _settings(cfg: TrainConfig, files: list[Path]) -> dict:
    s = asdict(cfg)
    s["saes"] = [list(x) for x in cfg.saes]
    s["corpus"] = [f"{f.name}:{f.stat().st_size}" for f in files]  # the files themselves, not where they lie
    s.pop("data")
    return s


def check_settings(folder: Path, settings: dict) -> None:
    """Write ``settings.json`` for a new run; for an existing one, refuse different settings, naming them."""
    path = folder / "settings.json"
    if not path.exists():
        write_text(path, json.dumps(settings, indent=1))
        return
    old = json.loads(path.read_text())
    diff = {k: (old.get(k), settings.get(k)) for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)}
    if diff:
        what = "; ".join(f"{k}: checkpoint has {a!r}, asked {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"the run in {folder} was made with other settings ({what}). Rerun with the same settings "
                         "to resume, or pass another --out (or delete that folder) to start afresh")


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (``ckpt-<tokens>/`` with its ``state.json``), or None."""
    done = [p for p in folder.glob("ckpt-*") if p.is_dir() and not p.name.endswith(".tmp") and (p / "state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def lr_at(cfg: TrainConfig, width: int, tokens_done: int, step: int) -> float:
    base = cfg.lr * math.sqrt(16384 / width)
    warm = min(1.0, (step + 1) / cfg.warmup_steps)
    start = (1 - cfg.decay_frac) * cfg.tokens
    frac = max(0.0, (tokens_done - start) / max(cfg.decay_frac * cfg.tokens, 1))
    return base * warm * (1 - 0.9 * min(frac, 1.0))


class Trainer:
    """The SAEs of one run, their optimisers and the position in the data."""

    def __init__(self, cfg: TrainConfig, d: int):
        self.cfg = cfg
        dt = getattr(torch, cfg.dtype)
        self.saes = {sae_key(layer, w): TopKSAE(d, w, cfg.k, seed=cfg.seed + i, matmul_dtype=dt)
                     for i, (layer, w) in enumerate(cfg.saes)}
        self.layer = {sae_key(layer, w): layer for layer, w in cfg.saes}
        self.opts = {n: torch.optim.Adam(s.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=6.25e-10, fused=True)
                     for n, s in self.saes.items()}
        self.silent = {n: torch.zeros(s.width, dtype=torch.long) for n, s in self.saes.items()}  # tokens since firing
        self.batch = 0  # next forward batch of the plan
        self.step = 0
        self.tokens = 0
        self.initialised = False

    def state(self) -> dict:
        return {"batch": self.batch, "step": self.step, "tokens": self.tokens, "initialised": self.initialised}

    def save(self, folder: Path) -> Path:
        """Write a checkpoint atomically (a temporary folder renamed when complete); keep the newest two."""
        final = folder / f"ckpt-{self.tokens:012d}"
        tmp = folder / (final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for n, sae in self.saes.items():
                torch.save({"sae": sae.state_dict(), "opt": self.opts[n].state_dict(), "silent": self.silent[n]},
                           tmp / f"{n}.pt")
            (tmp / "state.json").write_text(json.dumps(self.state()))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no half checkpoint behind
            kept = latest_checkpoint(folder)
            raise OSError(f"could not write a checkpoint in {folder} ({e}); "
                          + (f"{kept.name} is intact: " if kept else "")
                          + "free some space and rerun the same command to resume") from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in sorted(folder.glob("ckpt-*"), key=lambda p: p.name)[:-2]:
            if old.is_dir() and old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def load(self, ckpt: Path) -> None:
        for n, sae in self.saes.items():
            blob = torch.load(ckpt / f"{n}.pt", weights_only=True)
            sae.load_state_dict(blob["sae"])
            self.opts[n].load_state_dict(blob["opt"])
            self.silent[n] = blob["silent"]
        st = json.loads((ckpt / "state.json").read_text())
        self.batch, self.step, self.tokens, self.initialised = st["batch"], st["step"], st["tokens"], st["initialised"]

    def train_on(self, acts: dict[int, torch.Tensor], log) -> None:
        """SAE steps on one refill: ``acts[layer] [n, d]``, shuffled with a seed fixed by the refill's position."""
        n = next(iter(acts.values())).shape[0]
        if not self.initialised:
            for name, sae in self.saes.items():
                sae.init_from(acts[self.layer[name]])
            self.initialised = True
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.batch))
        n_steps = max(1, round(n / self.cfg.sae_batch))
        for chunk in torch.tensor_split(perm, n_steps):
            rows = {}
            for name, sae in self.saes.items():
                x = acts[self.layer[name]][chunk]
                dead = self.silent[name] > self.cfg.dead_tokens
                for g in self.opts[name].param_groups:
                    g["lr"] = lr_at(self.cfg, sae.width, self.tokens, self.step)
                fvu, auxk, idx = sae(x, dead=dead, track_threshold=self.step % 8 == 0)
                (fvu + self.cfg.auxk_alpha * auxk).backward()
                sae.before_step()
                self.opts[name].step()
                self.opts[name].zero_grad(set_to_none=True)
                sae.after_step()
                self.silent[name] += len(chunk)
                self.silent[name][idx.unique()] = 0
                rows[name] = {"fvu": round(fvu.item(), 5), "auxk": round(auxk.item(), 5),
                              "dead": round(dead.float().mean().item(), 5)}
            self.step += 1
            self.tokens += len(chunk)
            if self.step % 10 == 0:
                log({"step": self.step, "tokens": self.tokens, "time": time.time(), "saes": rows})


@torch.no_grad()
def residuals(model, tokens: torch.Tensor, keep: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
    """``{layer: [n_kept, d]}``: the residual after each block in ``layers`` at the ``keep`` positions of
    ``tokens [rows, pos]``, from one forward pass that stops after the deepest of them (no logits)."""
    from ..forward.run import read_hooks

    hooks = {resid_hook(layer): layer for layer in layers}
    cache = read_hooks(model, tokens, hooks)
    return {layer: cache[h][keep.to(cache[h].device)] for h, layer in hooks.items()}


def _bar(total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="tok", unit_scale=True, desc="training SAEs", smoothing=0.05,
                mininterval=10, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} tokens [{elapsed}<{remaining}, "
                                           "{rate_fmt}]")


def preflight(cfg: TrainConfig, folder: Path, d_model: int = 640) -> None:
    """Refuse before the model loads when the disk cannot hold the checkpoints (``d_model``: the model's width,
    gemma-3-270m's by default; the corpus's size is checked when the data plan is made)."""
    params = sum(2 * w * d_model + w + d_model for _, w in cfg.saes)
    need = 2.2 * params * CKPT_BYTES_PER_PARAM + 300e6  # two checkpoints, milestones, the token file
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise OSError(f"{folder} has {free / 1e9:.1f} GB free; this run needs about {need / 1e9:.1f} GB for its "
                      "checkpoints: free some space or pass --out on a larger disk")


def train(cfg: TrainConfig, out: Path | None = None, checkpoint_minutes: float = 5.0, max_minutes: float | None = None,
          show_progress: bool = True) -> Path:
    """Train (or resume) the run ``cfg`` in ``out`` (default ``$SAS_CACHE/train/<name>``); return its folder.

    Stops when ``cfg.tokens`` tokens are done, or after ``max_minutes`` (checkpointed), whichever comes first."""
    from ..forward.run import fast_layout, token_mask
    from ..load.models import load_model

    files = corpus_files(cfg.corpus)
    folder = run_dir(cfg, out)
    preflight(cfg, folder)
    check_settings(folder, _settings(cfg, files))
    model = load_model(cfg.model, dtype=cfg.dtype)
    fast_layout(model)
    tok = model.tokenizer
    corpus = corpus_tokens(files, tok, show_progress)
    prompts = []
    if cfg.prompt_frac > 0:
        prompts = [ids[:cfg.context - 1] for ids in
                   tok(steering_prompts(Path(cfg.data)), add_special_tokens=False)["input_ids"] if ids]
    plan = make_plan(corpus, prompts, cfg.tokens, cfg.context, cfg.batch_rows, cfg.prompt_frac, tok.bos_token_id,
                     cfg.seed)
    trainer = Trainer(cfg, model.cfg.d_model)
    ckpt = latest_checkpoint(folder)
    if ckpt is not None:
        trainer.load(ckpt)
        print(f"[train-sae] resumed from {ckpt} ({trainer.tokens:,} tokens done)", flush=True)
    logf = open(folder / "log.jsonl", "a")

    def log(row):
        logf.write(json.dumps(row) + "\n")
        logf.flush()

    layers = sorted({layer for layer, _ in cfg.saes})
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    t_start = t_ckpt = time.time()
    bar = _bar(cfg.tokens, trainer.tokens) if show_progress else None
    try:
        while trainer.batch < len(plan.batches) and trainer.tokens < cfg.tokens:
            acts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
            t0 = time.time()
            for b in range(trainer.batch, min(trainer.batch + cfg.refill, len(plan.batches))):
                tokens, keep = plan.tokens(b, pad)
                keep &= token_mask(model, tokens)
                for layer, a in residuals(model, tokens, keep, layers).items():
                    acts[layer].append(a)
            t1 = time.time()
            before = trainer.tokens
            trainer.train_on({layer: torch.cat(a) for layer, a in acts.items()}, log)
            trainer.batch = min(trainer.batch + cfg.refill, len(plan.batches))
            t2 = time.time()
            log({"refill": trainer.batch, "tokens": trainer.tokens, "forward_s": round(t1 - t0, 2),
                 "sae_s": round(t2 - t1, 2), "tok_per_s": round((trainer.tokens - before) / (t2 - t0), 1)})
            if bar is not None:
                bar.update(trainer.tokens - before)
            for m in MILESTONES:
                if before < m <= trainer.tokens:
                    export(trainer, folder / "milestones" / f"{m // 1_000_000}M", cfg)
            done = trainer.tokens >= cfg.tokens or trainer.batch >= len(plan.batches)
            stop = max_minutes is not None and time.time() - t_start > 60 * max_minutes
            if done or stop or time.time() - t_ckpt > 60 * checkpoint_minutes:
                trainer.save(folder)
                t_ckpt = time.time()
            if stop and not done:
                print(f"[train-sae] stopped after {max_minutes} minutes at {trainer.tokens:,} tokens; rerun to "
                      "resume", flush=True)
                break
    finally:
        if bar is not None:
            bar.close()
        logf.close()
    if trainer.tokens >= cfg.tokens or trainer.batch >= len(plan.batches):
        export(trainer, folder / "final", cfg)
    return folder


def export(trainer: Trainer, dest: Path, cfg: TrainConfig) -> list[Path]:
    """Write every SAE of ``trainer`` as a sae-lens TopK folder ``dest/<sae>/`` with ``training.json``."""
    from sae_lens import TopKSAE, TopKSAEConfig

    written = []
    for name, sae in trainer.saes.items():
        layer = trainer.layer[name]
        folder = dest / name
        tmp = dest / (name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        sl_cfg = TopKSAEConfig(d_in=sae.d, d_sae=sae.width, k=sae.k, dtype="float32", device="cpu",
                               apply_b_dec_to_input=True)
        meta = sl_cfg.metadata
        meta.model_name, meta.hook_name, meta.context_size = cfg.model, f"blocks.{layer}.hook_resid_post", cfg.context
        meta.training_architecture = "topk"
        meta.training_architecture_details = {"k": cfg.k, "trainer": "sas train-sae"}
        out = TopKSAE(sl_cfg)
        out.load_state_dict(sae.to_sae_lens())
        out.save_model(tmp)
        (tmp / "training.json").write_text(json.dumps(
            {**trainer.state(), "settings": asdict(cfg), "threshold_scaled": float(sae.threshold),
             "scale": float(sae.scale)}, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        written.append(folder)
    return written
