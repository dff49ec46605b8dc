"""What a condition costs: steered generation with and without a condition, interleaved in one run.

The same greedy generation (batch 8 neutral prompts, CAA sycophancy vector x2 at layer 8, ``after_prompt``) runs
unconditioned and under three conditions, each read in the steering pass by a hook: a dense direction decided per
prompt (layer 8, CAST's form), 8 SAE features decided per prompt and 8 decided per token (the default SAE at
layer 5). Goal: a condition adds at most 10% to the steered generation's time. The thresholds put each condition
on about half of the rows (or tokens); the check confirms that the rows it held on match the unconditioned text
and the others the unsteered text.
"""

from __future__ import annotations

from .harness import Bench, Comparison, Context

SAE_LAYER = 5  # the feature conditions read the default shipped SAE there


def _sae_name(model_name: str = "gemma-3-270m") -> str:
    from sas.load.saes import select_saes

    return select_saes(model_name, [SAE_LAYER])[0]


def _setup(ctx: Context, cfg: dict):
    from sas import generate, load_sae, steer
    from sas.load.saes import sae_layer
    from sas.activations.residual import last_token_activations
    from sas.load.data import load_neutral_prompts
    from sas.steering.condition import Condition

    model, n, layer = ctx.model, max(cfg["new_tokens"] // 2, 1), cfg["gen_layer"]  # 32 new tokens in full mode
    vec, mult = ctx.vector(tuple(cfg["layers"]), cfg["vector_pairs"]), cfg["gen_multiplier"]
    prompts = load_neutral_prompts()[:8]
    sae = load_sae(_sae_name(model.cfg.model_name), model)
    name = model.cfg.model_name
    # thresholds at the median over these prompts: each condition holds on about half of them
    dense = Condition("direction", layer, name, "dense", direction=vec.directions[layer])
    cos = dense._reader()(last_token_activations(model, prompts, [layer], reduce="mean")[layer])
    dense.threshold = float(cos.median())
    at = sae_layer(sae)
    acts = last_token_activations(model, prompts, [at], reduce="mean")[at]
    z = sae.encode(acts.to(sae.dtype)).float()
    feats = z.mean(0).topk(8).indices.tolist()  # features these prompts use
    ths = [float(z[:, f].median()) for f in feats]
    per_prompt = Condition("features", at, name, "features", features=feats, thresholds=[t * 4 for t in ths], sae=sae)
    per_token = Condition("features", at, name, "features", scope="token", features=feats,
                          thresholds=[t * 4 for t in ths], sae=sae)

    def run(condition=None, steered=True):
        # a condition's candidate returns (texts, the rows it holds on, as Condition.fires reads them) for the check
        fires = None if condition is None or condition.scope == "token" else condition.fires(model, prompts).tolist()

        def go():
            if not steered:
                return generate(model, prompts, n, batch_size=8, stop_at_eos=False)
            with steer(model, vec, mult, [layer], condition=condition):
                texts = generate(model, prompts, n, batch_size=8, stop_at_eos=False)
            return texts if condition is None else (texts, fires)
        return go

    return {"steered": run(), "unsteered": run(steered=False),
            "steered, dense condition (per prompt)": run(dense),
            "steered, feature condition (per prompt)": run(per_prompt),
            "steered, feature condition (per token)": run(per_token)}


def _check(out: dict) -> dict:
    steered, plain = out["steered"], out["unsteered"]
    res = {}
    for key in ("dense condition (per prompt)", "feature condition (per prompt)"):
        texts, fires = out[f"steered, {key}"]
        want = [s if f else u for s, u, f in zip(steered, plain, fires)]
        res[f"{key}: rows held"] = sum(fires)
        res[f"{key}: rows as expected"] = f"{sum(a == b for a, b in zip(texts, want))}/{len(want)}"
    token = out["steered, feature condition (per token)"][0]
    res["per token: rows unlike steered and unlike unsteered"] = sum(t != s and t != u for t, s, u in
                                                                      zip(token, steered, plain))
    return res


BENCH = Bench(
    "conditions", _setup,
    [Comparison("steered, dense condition (per prompt)", "steered", 1 / 1.10, "a dense condition adds < 10%"),
     Comparison("steered, feature condition (per prompt)", "steered", 1 / 1.10, "a feature condition adds < 10%"),
     Comparison("steered, feature condition (per token)", "steered", 1 / 1.10, "per token, < 10%"),
     Comparison("steered", "unsteered", None, "steering itself, for reference")],
    _check, repeats=3, warmup=True,
    describe=lambda cfg: f"greedy, {max(cfg['new_tokens'] // 2, 1)} new tokens, batch 8 neutral prompts; CAA sycophancy "
                         f"x{cfg['gen_multiplier']} at layer {cfg['gen_layer']} (after_prompt); conditions: a "
                         f"direction at layer {cfg['gen_layer']} (per prompt), 8 features of {_sae_name()} (per prompt, "
                         "per token)")
