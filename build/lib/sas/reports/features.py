"""Feature inspection: what each selected SAE feature means.

For a SAS vector or any feature ids: top-activating contexts from a corpus (the token
highlighted), the tokens its decoder direction promotes and suppresses through the unembedding,
its activation frequency, its output score (:mod:`sas.activations.output_scores`) and its firing
frequency on each side of the contrast the vector was built from, the overlap of feature sets across
behaviours, and Neuronpedia links for Gemma Scope SAEs. Functions return pandas DataFrames; :func:`report` writes Markdown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ..hooks import layer_of
from ..load.saes import sae_layer


NEURONPEDIA = {  # sae-lens release -> Neuronpedia model id and SAE set (for Gemma Scope)
    "gemma-scope-2b-pt-res-canonical": ("gemma-2-2b", "gemmascope-res-16k"),
    "gemma-scope-9b-pt-res-canonical": ("gemma-2-9b", "gemmascope-res-16k"),
}


def _check_ids(sae, features: Sequence[int]) -> list[int]:
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
    features = _check_ids(sae, features)
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
    from ..activations.residual import token_chunks

    features = _check_ids(sae, features)
    hook = sae.cfg.metadata.hook_name
    layer = layer_of(hook)
    tokens = token_chunks(model.tokenizer, texts, context, max_tokens)
    best = {f: [] for f in features}
    fired = torch.zeros(len(features), device=sae.W_enc.device)
    n_tok = 0
    idx = torch.tensor(features, device=sae.W_enc.device)
    for i in range(0, len(tokens), batch_size):
        t = tokens[i:i + batch_size]
        _, cache = model.run_with_cache(t, stop_at_layer=layer + 1, names_filter=lambda n: n == hook)
        z = sae.encode(cache[hook].to(sae.W_enc.device, sae.dtype))[..., idx].float()  # [b, pos, n_features]
        z[:, 0] = 0  # BOS is an outlier, never a context
        fired += (z[:, 1:] > 0).flatten(0, 1).sum(0)
        n_tok += z[:, 1:].shape[0] * z[:, 1:].shape[1]
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
        from ..activations.output_scores import output_scores as scores

        eff.insert(2, "output_score", scores(model, sae)[feats].tolist())
    if contrast is not None:
        from ..activations.codes import encode

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


def plot_overlap(df: pd.DataFrame, path: str | Path) -> Path:
    """A heat map of :func:`overlap`."""
    from .plots import figure, save_figure

    fig, axes = figure(figsize=(1 + 0.8 * len(df), 1 + 0.7 * len(df)))
    ax = axes[0][0]
    im = ax.imshow(df.values, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(df)), df.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(df)), df.index)
    for i in range(len(df)):
        for j in range(len(df)):
            ax.text(j, i, f"{df.values[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax, label="Jaccard overlap of SAS features")
    return save_figure(fig, path)


def neuronpedia_url(sae, feature: int) -> str | None:
    """A Neuronpedia link for a Gemma Scope feature (None for SAEs Neuronpedia does not host)."""
    release = getattr(sae, "sas_release", None)
    if release not in NEURONPEDIA:
        return None
    model_id, sae_set = NEURONPEDIA[release]
    layer = sae_layer(sae)
    return f"https://www.neuronpedia.org/{model_id}/{layer}-{sae_set}/{feature}"


def report(model, sae, vector, texts: Sequence[str], path: str | Path, layer: int | None = None,
           n_features: int = 10, k_contexts: int = 3, max_tokens: int = 20_000, contrast=None) -> Path:
    """Write a Markdown report on the top ``n_features`` features of a SAS vector (with ``contrast``, their firing
    frequency on each side of it)."""
    layer = vector.layers[0] if layer is None else layer
    table = feature_table(model, sae, vector, layer, contrast=contrast).head(n_features)
    ctx = top_contexts(model, sae, table.feature.tolist(), texts, k_contexts, max_tokens=max_tokens)
    lines = [f"# SAS features: {vector.behavior}, layer {layer}", "",
             f"SAE `{vector.sae_names.get(layer, '?')}`, settings `{vector.settings}`", ""]
    for _, r in table.iterrows():
        c = ctx[ctx.feature == r.feature]
        freq = c.frequency.iloc[0] if len(c) else 0.0
        sides = f", on {r.freq_pos:.0%} of the positive and {r.freq_neg:.0%} of the negative rows" \
            if "freq_pos" in table else ""
        lines += [f"## feature {r.feature}  (v = {r.value:+.3f}, output score {r.output_score:.3g}, fires on "
                  f"{freq:.2%} of tokens{sides})", "",
                  f"- promotes: {', '.join(map(repr, r.promoted))}",
                  f"- suppresses: {', '.join(map(repr, r.suppressed))}"]
        if r.neuronpedia:
            lines.append(f"- [Neuronpedia]({r.neuronpedia})")
        lines += [f"- {a:.2f}: `{s.replace(chr(96), chr(39))}`" for a, s in zip(c.activation, c.context)] + [""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path
