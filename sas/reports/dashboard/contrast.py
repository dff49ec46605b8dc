"""The contrastive data a saved SAS vector was built from, found again by name (for the dashboard's
per-side firing frequencies): a task's contrastive sentences or a behaviour's letter-balanced A/B pairs."""

from __future__ import annotations

import warnings


def vector_contrast(model, vector, name: str | None = None, layer: int | None = None):
    """``(positive, negative)`` for :func:`build_dashboard`'s ``contrast``, or None if ``name`` (default: the
    vector's ``behavior``) is neither a task (sentiment, topic) nor a CAA behaviour. Texts for a task,
    answer-letter activations ``[n, d_model]`` for a behaviour (as :func:`sas_vector` reads them). Warns if
    the data's hash differs from the one the vector recorded (then the frequencies are of other data)."""
    from ...activations.residual import answer_activations
    from ...concepts.tasks import sentiment_pairs, topic_pairs
    from ...load.data import BEHAVIORS, balance_letters, data_hash, load_behavior

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
