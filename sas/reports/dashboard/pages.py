"""HTML feature dashboards: one page per SAE feature and an index page, rendered with jinja2 templates.

Each feature page shows the feature's top-activating held-out contexts (tokens shaded by activation, the value
in each token's title), its density and activation histogram, the tokens its decoder direction promotes and
suppresses (logit lens), and, for a SAS vector, its weight and how often it fires on each side of the
contrastive data. Pages are self-contained (inline CSS, the histogram an inline PNG): they open offline.

    build_dashboard(model, sae, sv, "dash/", contrast=(pos_texts, neg_texts))   # a SAS vector
    build_dashboard(model, sae, [12, 345], "dash/")                             # any features
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch

from ...files import write_atomic
from ...load.saes import sae_hook, sae_layer, sae_name
from ...steering.kinds import Vector

MANIFEST = "sas_dashboard.json"  # marks a folder as a dashboard, listing the files it wrote
TEMPLATES = Path(__file__).parent / "templates"


def build_dashboard(model, sae, features, out_dir: str | Path, contrast: tuple | None = None,
                    layer: int | None = None, n_features: int | None = None, texts: Sequence[str] | None = None,
                    max_tokens: int | None = None, cache_dir: str | Path | None = None, n_contexts: int = 10,
                    k_tokens: int = 10, progress: bool = False) -> Path:
    """Write feature pages and an index page to ``out_dir``; return the index page's path.

    ``features`` is a :class:`~sas.steering.sparse.SparseVector` (its features at ``layer``, default its first, in order of
    |weight|; ``sae`` may be None to use the vector's own) or a list of feature ids of ``sae``. ``n_features``
    keeps the first n. ``contrast`` is ``(positive, negative)``: lists of texts (read at their last token, as
    :func:`~sas.methods.sas.sas_vector_from_texts` does) or activations ``[n, d_in]`` at the SAE's hook; each page
    then shows how often the feature fires on each side. ``texts``, ``max_tokens``, ``cache_dir``: the held-out
    text the per-SAE cache (:func:`~sas.activations.feature_cache.feature_cache`) is built from and where it lives.

    Raises ``IndexError`` for a feature outside the SAE, ``ValueError`` for a vector whose SAE is not ``sae`` or
    is missing, ``FileExistsError`` if ``out_dir`` holds files that an earlier dashboard did not write.
    """
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from ...evaluation.features import check_ids, contrast_counts, feature_cache, logit_effects, neuronpedia_url

    sae, feats, weights, layer, title = _resolve(sae, features, layer)
    if n_features is not None:
        feats, weights = feats[:n_features], (weights[:n_features] if weights is not None else None)
    feats = check_ids(sae, feats)
    out = Path(out_dir)
    old_files = _check_out_dir(out)
    fc = feature_cache(model, sae, texts, max_tokens, cache_dir, progress=progress)
    freqs = contrast_counts(model, sae, layer, contrast) if contrast is not None else None
    eff = logit_effects(model, sae, feats, k_tokens).set_index("feature")
    name = sae_name(sae)
    tok = model.tokenizer
    specials = set(tok.all_special_ids)

    rows = []
    for i, f in enumerate(feats):
        e = eff.loc[f]
        r = {"feature": f, "href": f"feature_{f}.html", "rank": i + 1,
             "weight": None if weights is None else float(weights[i]),
             "count": int(fc.counts[f]), "density_pct": _pct(fc.density(f)),
             "density_ci": _ci(int(fc.counts[f]), fc.n_positions), "max_act": float(fc.top_acts[f, 0]),
             "mean_active": fc.mean_active(f), "neuronpedia": neuronpedia_url(sae, f),
             "promoted": [_show(t) for t in e.promoted], "suppressed": [_show(t) for t in e.suppressed],
             "freq_pos": None, "freq_neg": None}
        r["promoted_pairs"] = list(zip(r["promoted"], e.promoted_logits))
        r["suppressed_pairs"] = list(zip(r["suppressed"], e.suppressed_logits))
        if freqs is not None:
            (kp, n_p), (kn, n_n) = (int(freqs[0][0][f]), freqs[0][1]), (int(freqs[1][0][f]), freqs[1][1])
            r.update(k_pos=kp, k_neg=kn, freq_pos=kp / n_p, freq_neg=kn / n_n, freq_pos_pct=_pct(kp / n_p),
                     freq_neg_pct=_pct(kn / n_n), pos_ci=_ci(kp, n_p), neg_ci=_ci(kn, n_n))
        rows.append(r)
    wmax = max((abs(r["weight"]) for r in rows if r["weight"] is not None), default=1.0) or 1.0
    for r in rows:
        r["bar"] = 0 if r["weight"] is None else max(1, round(80 * abs(r["weight"]) / wmax))

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["j2", "html"]),
                      trim_blocks=True, lstrip_blocks=True)
    common = {"sae_name": name, "hook": sae_hook(sae), "d_sae": sae.cfg.d_sae,
              "n_positions": fc.n_positions, "n_rows": len(rows), "built": time.strftime("%Y-%m-%d %H:%M"),
              "n_contrast": (freqs[0][1], freqs[1][1]) if freqs else None,
              "cache_note": f"{fc.n_positions} held-out tokens (SAE weights sha256 {fc.meta['sae_sha256'][:12]})"}
    files = {}
    page = env.get_template("feature.html.j2")
    for i, r in enumerate(rows):
        f = r["feature"]
        peak = max(r["max_act"], 1e-9)
        view = dict(r, promoted=r["promoted_pairs"], suppressed=r["suppressed_pairs"],
                    hist=_histogram_svg(fc, f),
                    contexts=[{"activation": c["activation"], "tokens": _tokens(tok, specials, c, peak)}
                              for c in fc.contexts(f, n_contexts)])
        files[r["href"]] = page.render(f=view, prev=rows[i - 1]["href"] if i else None,
                                       next=rows[i + 1]["href"] if i + 1 < len(rows) else None, **common)
    settings = json.dumps(getattr(features, "settings", None) or {}, default=str)[:300] \
        if weights is not None else ""
    files["index.html"] = env.get_template("index.html.j2").render(
        title=title, rows=rows, has_weight=weights is not None, has_contrast=freqs is not None,
        any_np=any(r["neuronpedia"] for r in rows), settings=settings, **common)

    out.mkdir(parents=True, exist_ok=True)
    # claim the files first: a run that stops half-way leaves a folder the next run may still replace
    _write(out / MANIFEST, json.dumps({"files": sorted(set(old_files) | set(files))}, indent=1))
    for fname, html in files.items():
        _write(out / fname, html)
    for stale in set(old_files) - set(files):  # pages of features no longer shown
        (out / stale).unlink(missing_ok=True)
    _write(out / MANIFEST, json.dumps({"files": sorted(files), "sae": name, "features": feats,
                                       "sae_sha256": fc.meta["sae_sha256"]}, indent=1))
    return out / "index.html"


def _resolve(sae, features, layer):
    """(sae, feature ids, weights or None, layer, page title) from a SparseVector or a list of ids."""
    if isinstance(features, Vector):
        if features.kind != "sparse":
            raise ValueError("a feature dashboard shows the SAE features of a sparse vector; a dense vector has none "
                             "(pass a SparseVector or a list of feature ids)")
        v = features
        layer = v.layers[0] if layer is None else layer
        if layer not in v.codes:
            raise ValueError(f"the vector has no code at layer {layer}; its layers are {v.layers}")
        own = v.saes.get(layer)
        if sae is None:
            sae = own
        if sae is None:
            raise ValueError(f"the vector's SAE for layer {layer} ({v.sae_names.get(layer, '?')}) was not found; "
                             "load it with sas.load_sae(name) and pass it")
        own_name = v.sae_names.get(layer)
        if sae is not own and (sae.cfg.d_sae != v.codes[layer].shape[-1]
                               or (own_name and getattr(sae, "sas_name", None) not in (None, own_name))):
            raise ValueError(f"the vector lives in SAE {own_name!r} ({v.codes[layer].shape[-1]} features) but SAE "
                             f"{getattr(sae, 'sas_name', '?')!r} ({sae.cfg.d_sae} features) was given; pass the "
                             "vector's own SAE (or sae=None)")
        feats = v.features(layer).tolist()
        weights = [v.codes[layer][f].item() for f in feats]
        return sae, feats, weights, layer, f"SAS vector: {v.behavior}, layer {layer}"
    if sae is None:
        raise ValueError("give the SAE the feature ids belong to")
    if isinstance(features, int) or (torch.is_tensor(features) and features.ndim == 0):
        features = [int(features)]
    feats = list(dict.fromkeys(int(f) for f in features))  # one page per feature, in the order given
    layer = sae_layer(sae) if layer is None else layer
    return sae, feats, None, layer, f"Features of {sae_name(sae)}"


def _check_out_dir(out: Path) -> list[str]:
    """The files an earlier dashboard wrote in ``out`` (to replace); raise if ``out`` holds anything else."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder; give a folder for the dashboard")
    if not out.exists():
        return []
    present = sorted(p.name for p in out.iterdir())
    ours = []
    if MANIFEST in present:
        try:
            ours = json.loads((out / MANIFEST).read_text())["files"]
        except (ValueError, KeyError) as e:
            raise FileExistsError(f"{out / MANIFEST} is unreadable ({e}); remove it or choose another folder")
    other = [p for p in present if p not in ours and p != MANIFEST]
    if other:
        shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
        raise FileExistsError(f"{out} holds files that are not part of a sas dashboard ({shown}); choose an empty "
                              "or new folder (a folder an earlier dashboard wrote is replaced)")
    return ours


def _tokens(tok, specials, ctx, peak):
    shown = []
    for j, (i, a) in enumerate(zip(ctx["ids"], ctx["acts"])):
        text = tok.decode([i])
        special = i in specials
        a = 0.0 if a != a else a  # NaN: outside the row
        shown.append({"text": f"⟨{tok.convert_ids_to_tokens(i).strip('<>')}⟩" if special else
                      text.replace("\n", "↵"), "act": a, "max": j == ctx["center"], "special": special,
                      "repr": repr(text), "alpha": round(0.12 + 0.78 * min(a / peak, 1.0), 3) if a > 0 else 0})
    return shown


def _histogram_svg(fc, feature: int, w: int = 460, h: int = 180) -> dict | None:
    """Bars and axis ticks of the feature's activation histogram (log-spaced bins, log x axis), laid out for the
    inline SVG in the feature template; None if the feature never fires. (matplotlib took 1-2 s a figure.)"""
    import math

    counts, edges = fc.histogram(feature)
    if len(counts) == 0:
        return None
    left, right, top, bottom = 48, 12, 22, 30
    lx = edges.double().log10().tolist()
    x0, x1 = lx[0], lx[-1]
    peak = int(counts.max())
    sx = (w - left - right) / max(x1 - x0, 1e-9)
    sy = (h - top - bottom) / peak
    bars = [{"x": round(left + (lx[i] - x0) * sx, 2), "w": round(max((lx[i + 1] - lx[i]) * sx - 0.6, 0.6), 2),
             "y": round(h - bottom - c * sy, 2), "h": round(c * sy, 2), "n": c, "lo": 10 ** lx[i],
             "hi": 10 ** lx[i + 1]} for i, c in enumerate(counts.tolist()) if c]
    ticks = []
    for e in range(math.floor(x0), math.ceil(x1) + 1):
        for m in ((1, 2, 5) if x1 - x0 < 2 else (1,)):
            v = m * 10.0 ** e
            if x0 <= math.log10(v) <= x1:
                ticks.append({"x": round(left + (math.log10(v) - x0) * sx, 2), "label": f"{v:g}"})
    return {"w": w, "h": h, "left": left, "bottom": h - bottom, "top": top, "right": w - right, "bars": bars,
            "ticks": ticks, "peak": peak, "total": int(counts.sum())}


def _ci(k: int, n: int) -> str:
    """A 95% Wilson interval of k / n, as percentages."""
    from scipy.stats import binomtest

    if n == 0:
        return "n/a"
    lo, hi = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return f"{_pct(lo)}–{_pct(hi)}"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if x >= 0.001 or x == 0 else f"{100 * x:.3f}%"


def _show(token: str) -> str:
    return token.replace("▁", "␣").replace("\n", "↵")


def _write(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
