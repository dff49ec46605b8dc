"""What `sas bench`'s features report costs per sparse vector: a pass of the model over held-out text for each
vector (the old way) against reading the SAE's feature cache (the dashboards' cache, built once per SAE).

Both write :func:`sas.reports.features.report` for a SAS vector of positive sentiment in the default layer-9 SAE
(top 4 features, 3 contexts each) from the same held-out tokens. The cache is built in the setup, untimed: its
one-time cost is in the check, so the break-even number of vectors per SAE can be read off (the benchmark
report writes about 80 vectors per SAE). Goal: at least 5x per vector.
"""

from __future__ import annotations

import time

from .harness import Bench, Comparison, Context

LAYER = 9


def _setup(ctx: Context, cfg: dict):
    from sas import load_sae, sas_vector_from_texts
    from sas.activations.feature_cache import feature_cache
    from sas.concepts.tasks import sentiment_pairs
    from sas.load.data import load_text_sample
    from sas.load.saes import select_saes
    from sas.reports.features import report

    import tempfile

    model, tokens = ctx.model, cfg["feature_tokens"]
    sae = load_sae(select_saes(model.cfg.model_name, [LAYER])[0], model)
    pos, neg = sentiment_pairs()
    vec = sas_vector_from_texts(model, sae, pos, neg, tau=0.1)
    texts, folder = load_text_sample(), tempfile.mkdtemp()
    start = time.perf_counter()
    fc = feature_cache(model, sae, texts, max_tokens=tokens, cache_dir=folder, rebuild=True)
    _BUILD["seconds"] = time.perf_counter() - start

    def write(cache=None):
        def go():
            path = report(model, sae, vec, texts, f"{folder}/{'cached' if cache else 'pass'}.md", layer=LAYER,
                          n_features=4, max_tokens=tokens, cache=cache)
            return path.read_text()
        return go

    return {"a pass over the held-out text per vector": write(), "read from the feature cache": write(fc)}


_BUILD = {}


def _check(out: dict) -> dict:
    plain, cached = out["a pass over the held-out text per vector"], out["read from the feature cache"]
    heads = [[ln for ln in text.splitlines() if ln.startswith(("## feature", "- promotes"))] for text in (plain, cached)]
    return {"feature cache build, once per SAE (s)": round(_BUILD.get("seconds", float("nan")), 1),
            "same features and logit-lens tokens": [h.split("fires on")[0] for h in heads[0]] ==
            [h.split("fires on")[0] for h in heads[1]],
            "contexts per page (pass, cache)": (plain.count("\n- ") - 2 * plain.count("## feature"),
                                                cached.count("\n- ") - 2 * cached.count("## feature"))}


BENCH = Bench(
    "features", _setup,
    [Comparison("read from the feature cache", "a pass over the held-out text per vector", 5.0,
                "features.md per vector: >= 5x")],
    _check, repeats=3, warmup=True, memory=False,
    describe=lambda cfg: f"one SAS vector's features page (positive sentiment, default layer-{LAYER} SAE, top 4 "
                         f"features) from {cfg['feature_tokens']:,} held-out tokens")
