"""A TopK sparse autoencoder built for training speed on a CPU, saved as a sae-lens TopK SAE.

The architecture and loss are those of Gao et al. 2024 ("Scaling and evaluating sparse autoencoders") as
EleutherAI's ``sparsify`` implements them: ``acts = TopK(ReLU(W_enc (x - b_dec) + b_enc))``, a unit-norm
decoder whose gradient loses its component along each row, the fraction of variance unexplained as the loss,
and the AuxK loss that lets dead latents predict the residual. What differs is where a CPU spends its time
(measured in ``benchmarks/train_sae.py``):

- the encoder's product runs in bfloat16 without an autograd graph (5x float32 on AVX-512 BF16);
- the backward pass touches only the ``k`` selected latents of each token: the encoder's weight gradient is a
  sparse ``[width, n] x [n, d]`` product (sparsify's ``index_add`` of ``[n, k, d]`` contributions costs
  4x more here), the decoder is an ``embedding_bag`` over the selected rows, as in sparsify.

Inputs are scaled by a fixed factor so that their mean norm is ``sqrt(d)``; :meth:`TopKSAE.to_sae_lens` folds
the scale back in, so the saved SAE reads and writes raw residuals. The saved SAE is sae-lens's TopK SAE with
the same ``k``: the fold is exact (a positive scale changes neither which latents are largest nor their signs).
One JumpReLU threshold for every latent (the batch-level threshold BatchTopK uses at inference) is not: Gemma's
rare high-norm tokens then switch on hundreds of latents and the spliced-in loss explodes. The running
batch-level threshold is still tracked and written to ``training.json`` for reference.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _GatherLinear(torch.autograd.Function):
    """``pre[i, idx[i, j]]`` of ``pre = x W^T + b`` computed outside autograd; the backward pass is sparse."""

    @staticmethod
    def forward(ctx, x, weight, bias, pre, idx):
        ctx.save_for_backward(x, idx)
        ctx.width = weight.shape[0]
        return pre.gather(1, idx).float()

    @staticmethod
    def backward(ctx, grad):
        x, idx = ctx.saved_tensors
        n, k = idx.shape
        rows = torch.arange(n, device=idx.device).repeat_interleave(k)
        g = torch.sparse_coo_tensor(torch.stack([idx.reshape(-1), rows]), grad.reshape(-1).float(),
                                    (ctx.width, n), check_invariants=False)
        grad_w = torch.sparse.mm(g, x.float())  # [width, d]
        grad_b = torch.zeros(ctx.width, dtype=grad.dtype, device=grad.device).index_add_(
            0, idx.reshape(-1), grad.reshape(-1))
        return None, grad_w, grad_b, None, None


class TopKSAE(nn.Module):
    """A TopK SAE over ``d``-wide inputs with ``width`` latents, ``k`` active per token.

    ``W_enc`` and ``W_dec`` are both ``[width, d]`` (the encoder as ``F.linear`` reads it, the decoder as
    ``embedding_bag`` does); ``scale`` multiplies raw inputs before encoding.
    """

    def __init__(self, d: int, width: int, k: int, seed: int = 0, matmul_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if not 0 < k <= width:
            raise ValueError(f"k={k} must be between 1 and the width {width}")
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(width, d, generator=g)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.clone())
        self.b_enc = nn.Parameter(torch.zeros(width))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("threshold", torch.tensor(0.0))  # running batch-level TopK threshold (scaled units)
        self.register_buffer("threshold_steps", torch.tensor(0, dtype=torch.long))
        self.d, self.width, self.k = d, width, k
        self.matmul_dtype = matmul_dtype

    # ------------------------------------------------------------------------------------------ setup
    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Fix the input scale (mean norm ``sqrt(d)``) and start ``b_dec`` at the scaled mean, from ``x [n, d]``
        (Gemma's residual mean is large: an SAE whose ``b_dec`` starts at zero spends its first features on it)."""
        x = x.float()
        self.scale.fill_(math.sqrt(self.d) / x.norm(dim=-1).mean().item())
        self.b_dec.copy_((x * self.scale).mean(0))

    # --------------------------------------------------------------------------------------- training
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations ``[n, width]`` of scaled, centred inputs, in the matmul dtype, no graph."""
        with torch.no_grad():
            dt = self.matmul_dtype
            return F.linear(x.to(dt), self.W_enc.to(dt), self.b_enc.to(dt))

    def forward(self, x_raw: torch.Tensor, dead: torch.Tensor | None = None, auxk_rows: int = 256,
                track_threshold: bool = True):
        """One training pass on raw inputs ``[n, d]``. Returns ``(fvu, auxk, idx)``: the fraction of variance
        unexplained, the AuxK loss (0 without dead latents; computed on the first ``auxk_rows`` rows) and the
        selected latents ``[n, k]``."""
        x = x_raw.float() * self.scale
        xc = x - self.b_dec.detach()
        pre = self.pre_acts(xc)
        idx = pre.topk(self.k, dim=-1, sorted=False).indices
        acts = F.relu(_GatherLinear.apply(xc, self.W_enc, self.b_enc, pre, idx))
        recon = F.embedding_bag(idx, self.W_dec, per_sample_weights=acts, mode="sum") + self.b_dec
        err = x - recon
        total_var = (x - x.mean(0)).pow(2).sum()
        fvu = err.pow(2).sum() / total_var
        auxk = fvu.new_zeros(())
        if dead is not None and (n_dead := int(dead.sum())) > 0:
            m = min(auxk_rows, len(x))
            k_aux = min(self.d // 2, n_dead)
            masked = pre[:m].masked_fill(~dead, float("-inf"))
            aidx = masked.topk(k_aux, dim=-1, sorted=False).indices
            aacts = F.relu(_GatherLinear.apply(xc[:m], self.W_enc, self.b_enc, pre[:m], aidx))
            e_hat = F.embedding_bag(aidx, self.W_dec, per_sample_weights=aacts, mode="sum")
            sub = x[:m]
            auxk = min(n_dead / k_aux, 1.0) * (e_hat - err[:m].detach()).pow(2).sum() / (sub - sub.mean(0)).pow(2).sum()
        if track_threshold:
            self._track_threshold(pre)
        return fvu, auxk, idx

    @torch.no_grad()
    def _track_threshold(self, pre: torch.Tensor, rows: int = 256) -> None:
        """Running mean of the batch-level TopK threshold, read on ``rows`` rows (a cheap, unbiased sample)."""
        sub = pre[:rows].float().reshape(-1)
        t = sub.topk(self.k * min(rows, len(pre)), sorted=False).values.min()
        n = min(int(self.threshold_steps), 100)  # a running mean over the last ~100 readings
        self.threshold.mul_(n / (n + 1)).add_(t / (n + 1))
        self.threshold_steps += 1

    @torch.no_grad()
    def before_step(self) -> None:
        """Remove the component of the decoder's gradient along its (unit) rows."""
        if self.W_dec.grad is not None:
            par = (self.W_dec.grad * self.W_dec).sum(-1, keepdim=True)
            self.W_dec.grad -= par * self.W_dec

    @torch.no_grad()
    def after_step(self) -> None:
        """Put the decoder's rows back on the unit sphere."""
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    # ------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def encode(self, x_raw: torch.Tensor) -> torch.Tensor:
        """Dense TopK codes ``[n, width]`` of raw inputs (float32; for checks, not for training)."""
        x = x_raw.float() * self.scale - self.b_dec
        pre = F.relu(F.linear(x, self.W_enc, self.b_enc))
        v, i = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(1, i, v)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Raw-space reconstruction of dense codes ``[n, width]``."""
        return (codes @ self.W_dec + self.b_dec) / self.scale

    @torch.no_grad()
    def to_sae_lens(self) -> dict[str, torch.Tensor]:
        """The weights of the equivalent sae-lens TopK SAE (``W_enc [d, width]``, ``W_dec [width, d]``), reading
        and writing raw residuals: the input scale is folded into the biases, so the decoder keeps unit-norm rows,
        the same ``k`` latents win and the codes are the training codes divided by ``scale``."""
        s = float(self.scale)
        return {
            "W_enc": self.W_enc.t().contiguous().float(),
            "W_dec": self.W_dec.contiguous().float(),
            "b_enc": (self.b_enc / s).float(),
            "b_dec": (self.b_dec / s).float(),
        }
