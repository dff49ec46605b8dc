"""Feature inspection: what SAE features mean, computed here and formatted by :mod:`sas.reports.features` and the
dashboards (:mod:`sas.reports.dashboard`).

For a SAS vector or any feature ids: top-activating contexts from a corpus, the tokens a feature's decoder
direction promotes and suppresses through the unembedding, its activation frequency, its output score
(:mod:`sas.steering.output_scores`) and its firing frequency on each side of the contrast a vector was built
from, the overlap of feature sets across behaviours, and Neuronpedia links for Gemma Scope SAEs. Functions
return pandas DataFrames.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import pandas as pd
import torch

from ..activations.codes import encode
from ..activations.feature_cache import FeatureCache, feature_cache
from ..activations.residual import answer_activations, last_token_activations, token_chunks
from ..forward.run import read_hooks, token_mask
from ..load.saes import sae_hook, sae_layer
from ..steering.output_scores import output_scores as output_score_table

__all__ = ["FeatureCache", "cached_contexts", "check_ids", "contrast_counts", "feature_cache", "feature_table",
           "logit_effects", "neuronpedia_url", "overlap", "top_contexts", "vector_contrast"]


NEURONPEDIA = {  # sae-lens release -> Neuronpedia model id and SAE set (for Gemma Scope)
    "gemma-scope-2b-pt-res-canonical": ("gemma-2-2b", "gemmascope-res-16k"),
    "gemma-scope-9b-pt-res-canonical": ("gemma-2-9b", "gemmascope-res-16k"),
}


def check_ids(sae, features: Sequence[int]) -> list[int]:
    features = [int(f) for f in features]
    bad = [f for f in features if not 0 <= f < sae.cfg.d_sae]
    if bad:
        raise IndexError(f"feature id(s) {bad} out of range: this SAE has {sae.cfg.d_sae} features (0..{sae.cfg.d_sae - 1})")
    return features


@torch.no_grad()
def logit_effects(model, sae, features: Sequence[int], k: int = 10) -> pd.DataFrame:
    """The tokens each feature's decoder direction promotes and suppresses: ``W_dec[f] @ W_U``
    (no final norm; the ranking is what matters). Columns: feature, promoted, suppressed, and the logit changes
    per unit of activation: promoted_logits, suppressed_logits."""
    features = check_ids(sae, features)
    rows = []
    w_u = model.W_U.detach().float()  # no copy for a float32 model (a 671 MB one per feature was the cost)
    dec = model.tokenizer.convert_ids_to_tokens
    for i in range(0, len(features), 32):  # 32 rows of 262k logits at a time
        chunk = features[i:i + 32]
        eff = sae.W_dec[chunk].detach().float() @ w_u
        top, bot = eff.topk(k, dim=-1), (-eff).topk(k, dim=-1)
        for j, f in enumerate(chunk):
            rows.append({"feature": f, "promoted": dec(top.indices[j].tolist()),
                         "suppressed": dec(bot.indices[j].tolist()), "promoted_logits": top.values[j].tolist(),
                         "suppressed_logits": (-bot.values[j]).tolist()})
    return pd.DataFrame(rows)


@torch.no_grad()
def top_contexts(model, sae, features: Sequence[int], texts: Sequence[str], k: int = 5, context: int = 128,
                 window: int = 8, max_tokens: int = 50_000, batch_size: int = 8) -> pd.DataFrame:
    """The ``k`` highest activations of each feature over ``texts`` (cut into ``context``-token rows,
    at most ``max_tokens``), with ``window`` tokens of context each side and the token marked
    ``[[like this]]``. Also the feature's activation frequency over those tokens.
    Columns: feature, rank, activation, token, context, frequency."""
    features = check_ids(sae, features)
    hook = sae_hook(sae)
    tokens = token_chunks(model, texts, context, max_tokens)
    best = {f: [] for f in features}
    fired = torch.zeros(len(features), device=sae.W_enc.device)
    n_tok = 0
    idx = torch.tensor(features, device=sae.W_enc.device)
    for i in range(0, len(tokens), batch_size):
        t = tokens[i:i + batch_size]
        z = sae.encode(read_hooks(model, t, [hook])[hook].to(sae.W_enc.device, sae.dtype))[..., idx].float()
        keep = token_mask(model, t).to(z.device)  # BOS and special tokens: never a context, never counted
        z *= keep[..., None]
        fired += (z > 0).flatten(0, 1).sum(0)
        n_tok += int(keep.sum())
        for j, f in enumerate(features):
            vals, flat = z[..., j].flatten().topk(min(k, z[..., j].numel()))
            for val, pos in zip(vals.tolist(), flat.tolist()):
                if val > 0:
                    best[f].append((val, i + pos // t.shape[1], pos % t.shape[1]))
    rows = []
    conv = model.tokenizer.decode
    for j, f in enumerate(features):
        for rank, (val, r, p) in enumerate(sorted(best[f], reverse=True)[:k]):
            row = tokens[r]
            left, tok, right = row[max(1, p - window):p], row[p:p + 1], row[p + 1:p + 1 + window]
            rows.append({"feature": f, "rank": rank, "activation": val, "token": conv(tok),
                         "context": f"{conv(left)}[[{conv(tok)}]]{conv(right)}",
                         "frequency": (fired[j] / max(n_tok, 1)).item()})
    return pd.DataFrame(rows)


def cached_contexts(model, cache: FeatureCache, features: Sequence[int], k: int = 5, window: int = 8) -> pd.DataFrame:
    """:func:`top_contexts` read from an SAE's :class:`FeatureCache` (built once per SAE, shared with the
    dashboards) instead of a pass of the model over the text: the same columns, with at most one context per
    stretch of text and up to ``window`` tokens each side that the cache holds."""
    conv = model.tokenizer.decode
    rows = []
    for f in features:
        for rank, c in enumerate(cache.contexts(int(f), k)):
            ids, m = c["ids"], c["center"]
            lo = max(m - window, 0)
            if lo < m and c["pos"] - m + lo == 0:  # the row's position 0 (BOS) is never shown, as in top_contexts
                lo += 1
            tok = conv(ids[m:m + 1])
            rows.append({"feature": int(f), "rank": rank, "activation": c["activation"], "token": tok,
                         "context": f"{conv(ids[lo:m])}[[{tok}]]{conv(ids[m + 1:m + 1 + window])}",
                         "frequency": cache.density(int(f))})
    return pd.DataFrame(rows, columns=["feature", "rank", "activation", "token", "context", "frequency"])


def feature_table(model, sae, vector, layer: int | None = None, k_tokens: int = 8, contrast=None,
                  output_scores: bool = True) -> pd.DataFrame:
    """One row per feature of a SAS vector: its value in v, the tokens it promotes/suppresses, its output score
    (``output_scores=True``; cached per SAE, computed on first use) and, given the ``contrast``
    (:class:`~sas.activations.contrast.Contrast`) it was built from, its firing frequency on each side
    (``freq_pos``, ``freq_neg``)."""
    layer = vector.layers[0] if layer is None else layer
    feats = vector.features(layer).tolist()
    eff = logit_effects(model, sae, feats, k_tokens).drop(columns=["promoted_logits", "suppressed_logits"])
    eff.insert(1, "value", [vector.codes[layer][f].item() for f in feats])
    if output_scores:
        eff.insert(2, "output_score", output_score_table(model, sae)[feats].tolist())
    if contrast is not None:
        pos, neg = contrast.activations(model, [layer])
        for side, acts in (("freq_pos", pos[layer]), ("freq_neg", neg[layer])):
            eff[side] = (encode(sae, acts)[:, feats] > 0).float().mean(0).tolist()
    eff["neuronpedia"] = [neuronpedia_url(sae, f) for f in feats]
    return eff


def overlap(vectors: dict[str, object], layer: int | None = None) -> pd.DataFrame:
    """Jaccard overlap of the feature sets of several SAS vectors (e.g. one per behaviour)."""
    sets = {}
    for name, v in vectors.items():
        l_ = v.layers[0] if layer is None else layer
        sets[name] = set(v.features(l_).tolist())
    names = list(sets)
    return pd.DataFrame([[len(sets[a] & sets[b]) / max(1, len(sets[a] | sets[b])) for b in names] for a in names],
                        index=names, columns=names)


def neuronpedia_url(sae, feature: int) -> str | None:
    """A Neuronpedia link for a Gemma Scope feature (None for SAEs Neuronpedia does not host)."""
    release = getattr(sae, "sas_release", None)
    if release not in NEURONPEDIA:
        return None
    model_id, sae_set = NEURONPEDIA[release]
    layer = sae_layer(sae)
    return f"https://www.neuronpedia.org/{model_id}/{layer}-{sae_set}/{feature}"


def contrast_counts(model, sae, layer, contrast):
    """((fired_pos [d_sae], n_pos), (fired_neg [d_sae], n_neg)) on the two sides of the contrastive data."""
    if len(contrast) != 2:
        raise ValueError("contrast is (positive, negative): two lists of texts or two [n, d_in] activation tensors")
    out = []
    for side in contrast:
        if torch.is_tensor(side):
            acts = side
        else:
            if not side or not all(isinstance(t, str) for t in side):
                raise ValueError("each side of contrast must be a non-empty list of texts or an [n, d_in] tensor")
            acts = last_token_activations(model, list(side), [layer])[layer]
        if acts.ndim != 2 or acts.shape[1] != sae.cfg.d_in:
            raise ValueError(f"contrast activations must be [n, {sae.cfg.d_in}], got {tuple(acts.shape)}")
        out.append(((encode(sae, acts) > 0).sum(0), len(acts)))
    return out


def vector_contrast(model, vector, name: str | None = None, layer: int | None = None):
    """``(positive, negative)`` for :func:`~sas.reports.dashboard.build_dashboard`'s ``contrast``, or None if ``name`` (default: the
    vector's ``behavior``) is neither a task (sentiment, topic) nor a CAA behaviour. Texts for a task,
    answer-letter activations ``[n, d_model]`` for a behaviour (as :func:`sas_vector` reads them). Warns if
    the data's hash differs from the one the vector recorded (then the frequencies are of other data)."""
    from ..load.data import BEHAVIORS, balance_letters, data_hash, load_behavior
    from ..concepts.tasks import sentiment_pairs, topic_pairs

    name = name or vector.behavior
    layer = vector.layers[0] if layer is None else layer
    tasks = {"sentiment": sentiment_pairs, "topic": topic_pairs}
    if name in tasks:
        pos, neg = tasks[name]()
        used, out = list(zip(pos, neg)), (pos, neg)
    elif name in BEHAVIORS:
        used = balance_letters(load_behavior(name), vector.settings.get("seed", 0)) \
            if vector.settings.get("balanced", True) else load_behavior(name)
        pos, neg = answer_activations(model, used, [layer], progress=False)
        out = (pos[layer], neg[layer])
    else:
        return None
    if vector.data_hash and data_hash(used) != vector.data_hash:
        warnings.warn(f"the {name!r} data's hash differs from the one this vector was built from: the per-side "
                      "firing frequencies are of the current data, not the vector's")
    return out
