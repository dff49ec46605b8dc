"""How the selection rules of :mod:`sas.methods.select` differ on one contrast: what each keeps, how much of the
code difference it carries, how close its decoded direction is to the dense (CAA) difference, and which shared
features the paper's rule drops."""

from __future__ import annotations

import pandas as pd
import torch

from ..activations.codes import encode
from ..steering.output_scores import output_scores
from ..evaluation.features import logit_effects
from ..load.saes import sae_layer
from ..methods.select import NoFeatures, select_features

RULES = {  # name -> select_features settings (the registered methods' defaults)
    "sas (paper)": {"shared": "drop"},
    "sas_diff": {"shared": "diff"},
    "sas_os": {"shared": "diff", "min_output_score": 0.01},
    "sas_os top 16": {"shared": "diff", "min_output_score": 0.01, "top_k": 16},
    "top 16 by output score": {"shared": "diff", "top_k": 16, "rank_by": "output_score"},
}


@torch.no_grad()
def compare_rules(model, sae, contrast, rules: dict | None = None, tau: float = 0.1) -> pd.DataFrame:
    """One row per rule: ``n_features`` (and how many lean to each side), ``n_shared_kept``/``n_both``, the share
    of the squared mean code difference on the kept features (``share_sq_diff``), the cosine of the decoded vector
    with the residual mean difference (``cos_dense``), the median output score of the kept features, or ``error``
    (which rule removed what) if none is left."""
    layer = sae_layer(sae)
    pos, neg = contrast.activations(model, [layer])
    zp, zn = encode(sae, pos[layer]), encode(sae, neg[layer])
    diff = zp.mean(0) - zn.mean(0)
    dense = pos[layer].mean(0) - neg[layer].mean(0)
    os_ = output_scores(model, sae)
    rows = []
    for name, st in (rules or RULES).items():
        st = {"tau": tau, **st}
        try:
            v, info = select_features(zp, zn, output_scores=os_, **st)
        except NoFeatures as e:
            rows.append({"rule": name, "n_features": 0, "error": str(e)})
            continue
        on = v != 0
        dec = v.to(sae.W_dec.dtype) @ sae.W_dec
        rows.append({"rule": name, "n_features": int(on.sum()), "n_positive_side": int((v > 0).sum()),
                     "n_negative_side": int((v < 0).sum()), "n_both": info["n_both"],
                     "n_shared_kept": int((on & (zp > 0).float().mean(0).ge(tau) & (zn > 0).float().mean(0).ge(tau)).sum()),
                     "share_sq_diff": float((diff[on] ** 2).sum() / (diff ** 2).sum()),
                     "cos_dense": torch.nn.functional.cosine_similarity(dec.float(), dense.float(), dim=0).item(),
                     "median_output_score": os_[on].median().item()})
    return pd.DataFrame(rows)


@torch.no_grad()
def shared_features(model, sae, contrast, tau: float = 0.1, n: int = 10, k_tokens: int = 6) -> pd.DataFrame:
    """The ``n`` features the paper's rule drops for firing on >= ``tau`` of both sides, by |mean difference|:
    their firing frequency and mean code on each side, output score and logit-lens tokens."""
    layer = sae_layer(sae)
    pos, neg = contrast.activations(model, [layer])
    zp, zn = encode(sae, pos[layer]), encode(sae, neg[layer])
    fp, fn = (zp > 0).float().mean(0), (zn > 0).float().mean(0)
    both = (fp >= tau) & (fn >= tau) if tau > 0 else (fp > 0) & (fn > 0)
    diff = zp.mean(0) - zn.mean(0)
    idx = both.nonzero()[:, 0]
    idx = idx[diff[idx].abs().argsort(descending=True)][:n].tolist()
    os_ = output_scores(model, sae)
    toks = logit_effects(model, sae, idx, k_tokens).set_index("feature")
    return pd.DataFrame([{"feature": f, "diff": diff[f].item(), "freq_pos": fp[f].item(), "freq_neg": fn[f].item(),
                          "mean_pos": zp[:, f].mean().item(), "mean_neg": zn[:, f].mean().item(),
                          "output_score": os_[f].item(), "promoted": toks.loc[f, "promoted"]} for f in idx])
