"""Steer a concept's prompts and score the continuations: the concept score, the perplexity of the continuation
under the unsteered model, and its distinct-2 ratio, per prompt (for paired intervals) and pooled.

Every strength of one vector runs in the same batches (one strength per row), and prompt ``i`` samples with
seed ``seed + i`` at every strength and for every method, so scores of two conditions are paired by prompt.
An ActAdd vector's own words (its "Love"/"Hate") leak into the text, so its rows add ``score_masked``: the score
with those words removed. This is the one open-ended evaluation: ``sas bench``, and the tasks of ``sas sweep``
and ``sas compare`` (:func:`run_task`), run it.
"""

from __future__ import annotations

import re
import time
from typing import Sequence

import torch

from ..forward.generate import generate
from ..forward.likelihood import continuation_nll
from ..concepts import task_concept, task_prompts
from ..steering.steer import Term, steer_terms
from .stats import bootstrap_ci, distinct_n, perplexity_ci

MAX_NEW_TOKENS = 24


def summarize(scores: Sequence[float], nll: Sequence[float], n_tokens: Sequence[int], distinct2: Sequence[float],
              details: dict[str, Sequence[float]] | None = None, seed: int = 0,
              continuous: Sequence[float] | None = None) -> dict:
    """The row of one condition from its per-prompt values: means with bootstrap 95% intervals. ``continuous``:
    the scorer's graded metric per prompt (the lexicon's rate per word, VADER's compound), beside a 0/1 score."""
    ppl, ppl_lo, ppl_hi = perplexity_ci(nll, n_tokens, seed=seed)
    lo, hi = bootstrap_ci(scores, seed=seed)
    d_lo, d_hi = bootstrap_ci(distinct2, seed=seed)
    row = {"score": sum(scores) / len(scores), "score_lo": lo, "score_hi": hi,
           "perplexity": ppl, "perplexity_lo": ppl_lo, "perplexity_hi": ppl_hi,
           "distinct2": sum(distinct2) / len(distinct2), "distinct2_lo": d_lo, "distinct2_hi": d_hi,
           "n": len(scores), "scores": list(scores), "nll": list(nll), "n_tokens": list(n_tokens),
           "distinct2s": list(distinct2)}
    for k, v in (details or {}).items():
        row[f"mean_{k}"] = sum(v) / len(v)
    if continuous is not None:
        c_lo, c_hi = bootstrap_ci(continuous, seed=seed)
        row.update(continuous=sum(continuous) / len(continuous), continuous_lo=c_lo, continuous_hi=c_hi,
                   continuous_scores=list(continuous))
    return row


def mask_words(vector) -> re.Pattern | None:
    """A regex of the words in an ActAdd vector's prompts (with simple inflections); None for other vectors."""
    if vector is None or getattr(vector, "method", None) != "actadd":
        return None
    words = {w.lower() for k in ("positive", "negative") for w in re.findall(r"[A-Za-z]+", vector.settings[k])}
    stems = sorted({w[:-1] if w.endswith("e") else w for w in words if len(w) > 2})
    return re.compile(r"\b(" + "|".join(stems) + r")\w*", re.I) if stems else None


@torch.no_grad()
def evaluate_concept(model, concept, prompts: list[str], vector=None, layer: int | Sequence[int] | None = None,
                     multipliers: Sequence[float] = (0.0,), prefix: str | None = None,
                     max_new_tokens: int = MAX_NEW_TOKENS, seed: int = 0, batch_size: int = 32,
                     fluency_context: str | None = None, positions: str | None = None) -> list[tuple[dict, list[str]]]:
    """Continue ``prompts`` (sampled: top-k 50, prompt ``i`` with seed ``seed + i``) once per multiplier of
    ``vector`` at ``layer`` (one layer or a list; None: all of the vector's) at ``positions`` (default: the
    vector's own), all multipliers in shared batches, or unsteered (``vector=None``), with ``prefix`` prepended
    (the prompting baseline). Returns one ``(row, texts)`` per multiplier: see :func:`summarize`.
    Several vectors steer together (composition) when ``vector`` is a list, ``layer`` the list of their layers
    and each multiplier a tuple of one strength per vector.
    ``fluency_context``: also score each continuation under the fluency model (SmolLM2) given this context plus
    the prompt (:func:`sas.evaluation.fluency.fluency_nll`): the row's ``fluency_ppl`` and its interval.
    """
    t0 = time.time()
    several = isinstance(vector, (list, tuple))
    vectors = [] if vector is None else list(vector) if several else [vector]
    # one vector: ``layer`` is its layer, its list of layers or None; several: one entry per vector
    layers = list(layer) if several and isinstance(layer, (list, tuple)) else [layer] * len(vectors)
    mults = [tuple(map(float, m)) if isinstance(m, (list, tuple)) else (float(m),) * max(len(vectors), 1)
             for m in multipliers]
    if len(layers) != len(vectors) or any(len(m) != max(len(vectors), 1) for m in mults):
        raise ValueError(f"{len(vectors)} vectors need as many layers (got {len(layers)}) and a strength for each "
                         "in every multiplier")
    n = len(prompts)
    inputs = [(prefix or "") + p for _ in mults for p in prompts]
    seeds = [seed + i for _ in mults for i in range(n)]
    strengths = [m for m in mults for _ in prompts]
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=True, top_k=50)
    clock = {}  # where the time goes (seconds per phase, over all multipliers): the bench report sums these
    tick = time.time()
    texts = []
    for i in range(0, len(inputs), batch_size):
        chunk = slice(i, i + batch_size)
        s = torch.tensor(strengths[chunk]).reshape(len(strengths[chunk]), -1)  # [rows, vectors]
        terms = [Term(v, s[:, k], None if x is None else [x] if isinstance(x, int) else list(x), positions)
                 for k, (v, x) in enumerate(zip(vectors, layers)) if s[:, k].any()]
        with steer_terms(model, terms):
            texts += generate(model, inputs[chunk], batch_size=batch_size, seed=seeds[chunk], **kwargs)
    clock["generate"], tick = time.time() - tick, time.time()
    # fluency: the continuation given the prompt alone (not the prefix), under the unsteered model
    nll = continuation_nll(model, prompts * len(mults), texts, batch_size=batch_size)
    clock["perplexity"], tick = time.time() - tick, time.time()
    if fluency_context is not None:
        from .fluency import fluency_nll

        fl = fluency_nll([fluency_context + p for p in prompts] * len(mults), texts, batch_size=batch_size)
        clock["fluency_model"], tick = time.time() - tick, time.time()
    scorer, mask = concept.scorer(), mask_words(None if several else vector)
    out = []
    for j, m in enumerate(mults):
        part = texts[j * n:(j + 1) * n]
        details = scorer.details(part)
        row = summarize(details[scorer.primary], nll[j * n:(j + 1) * n, 0].tolist(),
                        [int(t) for t in nll[j * n:(j + 1) * n, 1].tolist()], [distinct_n(t) for t in part],
                        {k: v for k, v in details.items()}, seed, details[scorer.continuous])
        if mask is not None:
            masked = scorer.score([mask.sub("", t) for t in part])
            row["score_masked"] = sum(masked) / len(masked)
        if fluency_context is not None:
            part_nll = fl[j * n:(j + 1) * n]
            ppl, lo, hi = perplexity_ci(part_nll[:, 0].tolist(), part_nll[:, 1].tolist(), seed=seed)
            row.update(fluency_ppl=ppl, fluency_ppl_lo=lo, fluency_ppl_hi=hi, fluency_nll=part_nll[:, 0].tolist(),
                       fluency_tokens=[int(t) for t in part_nll[:, 1].tolist()])
        out.append((row, part))
    clock["scorer"] = time.time() - tick
    for row, _ in out:
        row["seconds"] = (time.time() - t0) / len(mults)
        row.update({f"seconds_{k}": v / len(mults) for k, v in clock.items()})
    return out


def run_task(model, task: str, vector=None, multiplier: float = 0.0, layers: Sequence[int] | None = None,
             n_prompts: int = 40, max_new_tokens: int = 30, seed: int = 0, positions: str | None = None,
             batch_size: int = 40) -> dict:
    """Continue the first ``n_prompts`` prompts of a task's concept (:func:`sas.concepts.task_concept`:
    ``sentiment``, ``topic`` or any concept) steered by ``vector`` x ``multiplier`` (raw) at ``layers``, and
    score them. Returns the row of :func:`evaluate_concept` (``score``, its interval, ``perplexity``, ``n``,
    ``seconds``, ...) with ``score_masked`` (ActAdd's own words removed; else the score) and ``texts``."""
    concept = task_concept(task)
    (row, texts), = evaluate_concept(model, concept, task_prompts(concept, n_prompts),
                                     vector if multiplier else None, layers, [multiplier],
                                     max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size,
                                     positions=positions)
    return {"score_masked": row["score"], **row, "texts": texts}
