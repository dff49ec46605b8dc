"""SAE-targeted steering (SAE-TS; Chalnev, Siu and Conmy 2024, code ``slavachalnev/SAE-TS``): a dense vector solved
to move the chosen SAE features with the fewest side effects, through the layer's effect map
(:mod:`sas.steering.effects`). The chosen features and their target sizes are the selection rules' vector
(:mod:`sas.methods.select`; by default shared features kept at their mean difference, as ``sas_diff``)."""

from __future__ import annotations

import torch

from ..activations.codes import encode
from ..load.saes import sae_name
from ..steering.vector import SteeringVector
from .registry import register
from .select import select_features


def _no_effect_map(model, sae, effect_vectors: int = 1024, **_) -> str | None:
    from ..steering.effects import missing_effect_map

    return missing_effect_map(model, sae, effect_vectors)


@register("sae_ts", multipliers=(-2, -1, 0, 1, 2), needs_sae=True, missing=_no_effect_map)
def build(model, contrast, layers, saes=None, positions="after_prompt", tau: float = 0.1, mean: str = "all",
          shared: str = "diff", min_output_score: float | None = None, top_k: int | None = None,
          solve: str = "sae_ts", effect_vectors: int = 1024) -> SteeringVector:
    """SAE-TS: the dense direction that moves the selected features (target = the selection's vector) with the
    fewest side effects, at the effect map's measured scale per unit multiplier."""
    return solved(model, contrast, layers, saes, positions, tau, mean, shared, min_output_score, top_k, solve,
                  effect_vectors, "sae_ts")


@register("sae_ts_pinv", multipliers=(-2, -1, 0, 1, 2), needs_sae=True, missing=_no_effect_map)
def build_pinv(model, contrast, layers, saes=None, positions="after_prompt", tau: float = 0.1, mean: str = "all",
               shared: str = "diff", min_output_score: float | None = None, top_k: int | None = None,
               effect_vectors: int = 1024) -> SteeringVector:
    """SAE-TS's pseudo-inverse baseline (their ``pinverse_steer``): the direction whose predicted effect is closest
    to the target in least squares, so the smallest squared side effects on all other features."""
    return solved(model, contrast, layers, saes, positions, tau, mean, shared, min_output_score, top_k, "pinv",
                  effect_vectors, "sae_ts_pinv")


def solved(model, contrast, layers, saes, positions, tau, mean, shared, min_output_score, top_k, solve,
           effect_vectors, method) -> SteeringVector:
    """The vector of :func:`build` (``method`` names it in its metadata)."""
    from ..steering.effects import effect_map

    pos, neg = contrast.activations(model, layers)
    dirs, per_layer = {}, {}
    for x in layers:
        if x not in (saes or {}):
            raise ValueError(f"no SAE for layer {x}: sae_ts needs one per layer ({sorted(saes or {})} given)")
        sae = saes[x]
        os_ = None
        if min_output_score is not None:
            from ..steering.output_scores import output_scores

            os_ = output_scores(model, sae)
        target, info = select_features(encode(sae, pos[x]), encode(sae, neg[x]), tau, mean, shared, os_,
                                       min_output_score, top_k)
        em = effect_map(model, sae, n_vectors=effect_vectors)
        d = em.solve(target, solve)
        # the predicted effect on the chosen features against everything else: how targeted the solution is
        pred = em.predict(d[None])[0] - em.b
        on = target != 0
        cos = torch.nn.functional.cosine_similarity(pred, target.float(), dim=0).item()
        dirs[x] = d * em.scale
        per_layer[x] = {**info, "sae": sae_name(sae), "effect_map_ev": em.explained_variance,
                        "effect_map_ev_interval": list(em.ev_interval), "scale": em.scale,
                        "predicted_cos_target": cos,
                        "predicted_on_target_share": float((pred[on] ** 2).sum() / (pred ** 2).sum().clamp(min=1e-30))}
    return SteeringVector(dirs, model.cfg.model_name, method, contrast.name, positions=positions,
                          data_hash=contrast.hash,
                          settings={"tau": tau, "mean": mean, "shared": shared, "min_output_score": min_output_score,
                                    "top_k": top_k, "solve": solve, "effect_vectors": effect_vectors,
                                    "n_pairs": contrast.n_pairs, "per_layer": per_layer})
