"""What every feature page of a dashboard needs, computed once per SAE over held-out text and cached on disk.

One streamed pass of the model (up to the SAE's layer) over the held-out Wikipedia sample gives, for every
feature of the SAE: its ``k`` highest activations with the feature's activation on the tokens around each,
how often it fires (density), and a histogram of its non-zero activations (log-spaced bins). The cache is a
per-SAE file of :mod:`sas.activations.sae_cache` (tied to the SAE's weights: a cache built from other weights
is rebuilt, never shown).

    fc = feature_cache(model, sae)                 # built once (about a minute for a 4k SAE), then read
    fc.contexts(123)                               # top contexts of feature 123
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..forward.run import read_hooks, token_mask
from ..load.saes import sae_hook
from .sae_cache import cached, load_tensors, save_tensors

VERSION = 1  # bump when the content of the cache changes meaning
TENSORS = ("top_acts", "top_rows", "top_pos", "windows", "tokens", "counts", "act_sum", "hist", "bin_edges")


@dataclass
class FeatureCache:
    """Per-feature statistics of one SAE over held-out text.

    ``top_acts, top_rows, top_pos [d_sae, k]``: the k highest activations (descending; 0 = none) and where they
    are in ``tokens [n_rows, context]``; ``windows [d_sae, k, left + 1 + right]``: the feature's activation on the
    tokens around each (NaN outside the row); ``counts [d_sae]``: positions fired on, of ``n_positions``;
    ``act_sum [d_sae]``: sum of activations; ``hist [d_sae, n_bins]`` over ``bin_edges [n_bins + 1]``.
    """

    top_acts: torch.Tensor
    top_rows: torch.Tensor
    top_pos: torch.Tensor
    windows: torch.Tensor
    tokens: torch.Tensor
    counts: torch.Tensor
    act_sum: torch.Tensor
    hist: torch.Tensor
    bin_edges: torch.Tensor
    meta: dict = field(default_factory=dict)

    @property
    def n_positions(self) -> int:
        return int(self.meta["n_positions"])

    @property
    def left(self) -> int:
        return int(self.meta["settings"]["left"])

    def density(self, feature: int) -> float:
        return self.counts[feature].item() / max(self.n_positions, 1)

    def mean_active(self, feature: int) -> float:
        return self.act_sum[feature].item() / max(self.counts[feature].item(), 1)

    def contexts(self, feature: int, n: int = 10) -> list[dict]:
        """Up to ``n`` top contexts of ``feature``, best first, at most one per stretch of text: each
        ``{"activation", "row", "pos", "ids" [window], "acts" [window] (NaN: outside the row), "center"}``."""
        out, taken = [], []
        width = self.windows.shape[-1]
        for a, r, p, w in zip(self.top_acts[feature].tolist(), self.top_rows[feature].tolist(),
                              self.top_pos[feature].tolist(), self.windows[feature].float()):
            if a <= 0 or len(out) >= n:
                break
            if any(r == r2 and abs(p - p2) < width for r2, p2 in taken):  # same stretch of text: shown already
                continue
            taken.append((r, p))
            pos = torch.arange(p - self.left, p - self.left + width)
            inside = (pos >= 0) & (pos < self.tokens.shape[1])
            ids = torch.where(inside, self.tokens[r, pos.clamp(0, self.tokens.shape[1] - 1)], -1)
            out.append({"activation": a, "row": r, "pos": p, "ids": ids[inside].tolist(),
                        "acts": w[inside].tolist(), "center": int(self.left - (~inside[:self.left]).sum())})
        return out

    def histogram(self, feature: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts, bin edges) of the feature's non-zero activations, trimmed to the occupied bins."""
        h = self.hist[feature]
        nz = h.nonzero()[:, 0]
        if len(nz) == 0:
            return h[:0], self.bin_edges[:1]
        lo, hi = int(nz.min()), int(nz.max()) + 1
        return h[lo:hi], self.bin_edges[lo:hi + 1]

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` atomically (a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_tensors(path, {k: getattr(self, k) for k in TENSORS}, self.meta)

    def problem(self, d_sae: int, d_vocab: int) -> str | None:
        """What is wrong with this cache for an SAE of ``d_sae`` features and a vocabulary of ``d_vocab`` tokens
        (shapes, dtypes, ranges), or None: the pages index its tensors with each other's values."""
        s = self.meta.get("settings", {})
        k, width, (n_rows, context) = s.get("k"), s.get("left", 0) + 1 + s.get("right", 0), tuple(self.tokens.shape)
        n_pos = self.meta.get("n_positions")
        shapes = {"top_acts": (d_sae, k), "top_rows": (d_sae, k), "top_pos": (d_sae, k), "windows": (d_sae, k, width),
                  "counts": (d_sae,), "act_sum": (d_sae,), "hist": (d_sae, N_BINS), "bin_edges": (N_BINS + 1,)}
        for name, shape in shapes.items():
            if tuple(getattr(self, name).shape) != shape:
                return f"{name} of shape {list(getattr(self, name).shape)}, not {list(shape)}"
        ints = ("top_rows", "top_pos", "tokens", "counts", "hist")
        bad = [n for n in TENSORS if getattr(self, n).is_floating_point() == (n in ints)]
        if bad:
            return f"{bad[0]} of dtype {getattr(self, bad[0]).dtype}"
        if isinstance(n_pos, bool) or not isinstance(n_pos, int) or n_pos < 0:
            return f"n_positions {n_pos!r}"
        ranges = {"top_rows": (self.top_rows, 0, n_rows - 1), "top_pos": (self.top_pos, 0, context - 1),
                  "tokens": (self.tokens, 0, d_vocab - 1), "counts": (self.counts, 0, n_pos),
                  "hist": (self.hist, 0, n_pos), "top_acts": (self.top_acts, 0, float("inf")),
                  "act_sum": (self.act_sum, 0, float("inf"))}
        for name, (t, lo, hi) in ranges.items():
            if t.numel() and not (t.float().isfinite().all() and t.min() >= lo and t.max() <= hi):
                return f"{name} with values outside [{lo}, {hi}]"
        if not torch.equal(self.bin_edges, BIN_EDGES):
            return "other histogram bins"
        return None

    @classmethod
    def load(cls, path: str | Path) -> "FeatureCache":
        tensors, meta = load_tensors(path)
        return cls(**{k: tensors[k] for k in TENSORS}, meta=meta)


def feature_cache(model, sae, texts: Sequence[str] | None = None, max_tokens: int | None = None,
                  cache_dir: str | Path | None = None, k: int = 24, left: int = 20, right: int = 6,
                  context: int = 128, batch_size: int = 16, rebuild: bool = False,
                  progress: bool = False) -> FeatureCache:
    """The :class:`FeatureCache` of ``sae`` on ``texts`` (default: the held-out Wikipedia sample,
    ``load_text_sample()``), read from the SAE's cache (:mod:`sas.activations.sae_cache`; ``cache_dir`` instead if
    given) or built and saved there.

    ``max_tokens`` caps the tokens used (None: all of ``texts``). A file built from other weights or settings, or
    holding tensors this SAE could not have produced, is rebuilt (with a warning)."""
    from ..load.data import data_hash, load_text_sample
    from .residual import token_chunks

    texts = load_text_sample() if texts is None else list(texts)
    settings = {"version": VERSION, "model": model.cfg.model_name, "dtype": str(model.cfg.dtype),
                "hook": sae_hook(sae), "texts": data_hash(texts), "max_tokens": max_tokens,
                "k": k, "left": left, "right": right, "context": context, "n_bins": N_BINS}

    def build():
        tokens = token_chunks(model, texts, context, max_tokens)
        if max_tokens is not None:
            tokens = tokens[:max(1, -(-max_tokens // (context - 1)))]
        fc = _build(model, sae, tokens, k, left, right, batch_size, progress)
        return {k: getattr(fc, k) for k in TENSORS}, fc.meta

    tensors, meta = cached(sae, "features", settings, build, rebuild, folder=cache_dir)
    fc = FeatureCache(**{k: tensors[k] for k in TENSORS}, meta=meta)
    problem = fc.problem(sae.cfg.d_sae, model.cfg.d_vocab)
    if problem is not None:
        warnings.warn(f"the feature cache {meta['path']} holds {problem}: not a cache this SAE could have built; "
                      "rebuilding it")
        tensors, meta = cached(sae, "features", settings, build, rebuild=True, folder=cache_dir)
        fc = FeatureCache(**{k: tensors[k] for k in TENSORS}, meta=meta)
    return fc


N_BINS = 240
BIN_EDGES = torch.logspace(-3, 5, N_BINS + 1)  # activations from 1e-3 to 1e5, 30 bins a decade


@torch.no_grad()
def _build(model, sae, tokens: torch.Tensor, k: int, left: int, right: int, batch_size: int,
           progress: bool) -> FeatureCache:
    from tqdm.auto import tqdm

    hook = sae_hook(sae)
    d_sae, n_pos_row = sae.cfg.d_sae, tokens.shape[1]
    width = left + 1 + right
    best_v = torch.zeros(0, d_sae)
    best_r = torch.zeros(0, d_sae, dtype=torch.long)
    best_p = torch.zeros(0, d_sae, dtype=torch.long)
    best_w = torch.zeros(0, d_sae, width)
    counts = torch.zeros(d_sae, dtype=torch.long)
    act_sum = torch.zeros(d_sae, dtype=torch.float64)
    hist = torch.zeros(d_sae * N_BINS, dtype=torch.long)
    offsets = torch.arange(-left, right + 1)
    feats = torch.arange(d_sae)
    n_positions = 0
    for i in tqdm(range(0, len(tokens), batch_size), desc="feature cache", disable=not progress, mininterval=10):
        batch = tokens[i:i + batch_size]
        z = sae.encode(read_hooks(model, batch, [hook])[hook].to(sae.dtype)).float().cpu()  # [b, pos, d_sae]
        keep = token_mask(model, batch)  # BOS and special tokens are never counted or shown
        z *= keep[..., None]
        n_positions += int(keep.sum())
        counts += (z > 0).sum((0, 1))
        act_sum += z.sum((0, 1), dtype=torch.float64)
        flat = z.reshape(-1, d_sae)
        where = flat.nonzero()
        vals = flat[where[:, 0], where[:, 1]]
        bins = (torch.bucketize(vals, BIN_EDGES) - 1).clamp(0, N_BINS - 1)
        hist += torch.bincount(where[:, 1] * N_BINS + bins, minlength=d_sae * N_BINS)
        v, idx = flat.topk(min(k, len(flat)), dim=0)  # [k, d_sae]
        r, p = idx // n_pos_row, idx % n_pos_row
        pp = p[..., None] + offsets  # [k, d_sae, width]
        w = z[r[..., None], pp.clamp(0, n_pos_row - 1), feats[None, :, None]]
        w = torch.where((pp >= 0) & (pp < n_pos_row), w, torch.nan)
        all_v = torch.cat([best_v, v])
        sel = all_v.topk(min(k, len(all_v)), dim=0).indices
        best_v = all_v.gather(0, sel)
        best_r = torch.cat([best_r, r + i]).gather(0, sel)
        best_p = torch.cat([best_p, p]).gather(0, sel)
        best_w = torch.cat([best_w, w]).gather(0, sel[..., None].expand(-1, -1, width))
    return FeatureCache(top_acts=best_v.T.contiguous(), top_rows=best_r.T.int().contiguous(),
                        top_pos=best_p.T.int().contiguous(), windows=best_w.transpose(0, 1).half().contiguous(),
                        tokens=tokens.int(), counts=counts, act_sum=act_sum,
                        hist=hist.view(d_sae, N_BINS).int(), bin_edges=BIN_EDGES.clone(),
                        meta={"n_positions": n_positions, "n_rows": len(tokens), "d_sae": d_sae})
