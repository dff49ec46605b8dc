"""Fluency measures for the benchmark's budgets, each a number per condition that should grow as steering breaks
the text, not as the text moves to the concept.

- ``perplexity``: the continuation's perplexity given the prompt alone under the *unsteered* model (the first
  measure; it also charges the concept: text about weddings, or in French, is unlikely after a neutral prompt).
- ``smollm2``: the continuation's perplexity under a second model, SmolLM2-135M-Instruct (it did not write the
  text), given the concept's prefix plus the prompt (so the topic is expected): :func:`fluency_nll`.
- ``kl``: the mean next-token KL divergence from the unsteered to the steered model over held-out Wikipedia
  text (the edit's collateral damage, independent of any continuation): :func:`steering_kl`.

Budgets: the two perplexities are ratios to the unsteered condition's; ``kl`` is in nats, compared as it is.
A NaN from a fluency model is refused (:class:`ValueError`), never averaged in.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class Measure:
    name: str
    key: str  # the row's field
    ratio: bool  # budgets are ratios to the unsteered row's value (else absolute)
    budgets: tuple[float, ...]
    what: str


MEASURES = {
    "perplexity": Measure("perplexity", "perplexity", True, (1.25, 1.5, 2.0),
                          "perplexity of the continuation given the prompt under the unsteered model"),
    "smollm2": Measure("smollm2", "fluency_ppl", True, (1.25, 1.5, 2.0),
                       "perplexity of the continuation under SmolLM2-135M-Instruct given the concept's prefix "
                       "and the prompt"),
    "kl": Measure("kl", "kl", False, (0.05, 0.1, 0.2),
                  "mean next-token KL (nats) from the unsteered to the steered model on held-out text"),
}
DEFAULT_MEASURE = "perplexity"
FLUENCY_MODEL = "smollm2-135m-instruct"
N_KL_TEXTS, KL_MAX_TOKENS = 8, 32  # 256 positions: a few seconds per strength on a CPU


def get_measure(name: str) -> Measure:
    if name not in MEASURES:
        raise ValueError(f"unknown fluency measure {name!r}; choose one of {sorted(MEASURES)}")
    return MEASURES[name]


def check_fluency_model(name: str = FLUENCY_MODEL) -> None:
    """Raise ``ImportError`` naming the install command if the fluency model's package is missing (call it
    before any generation, so that a run does not fail after hours)."""
    from ..load.models import LOCAL_MODELS, cache_dir

    spec = LOCAL_MODELS[name]
    if importlib.util.find_spec(spec.package) is None and not (cache_dir() / name / "sas_manifest.json").exists():
        raise ImportError(f"the fluency measure 'smollm2' scores text with {name}, whose weights come in the package "
                          f"{spec.package!r}, which is not installed: {spec.install}")


@lru_cache(maxsize=1)
def _fluency_model(name: str):
    from ..load.models import load_hf

    check_fluency_model(name)
    return load_hf(name)


def _refuse_nan(values: torch.Tensor, what: str) -> None:
    if not torch.isfinite(values).all():
        bad = int((~torch.isfinite(values)).sum())
        raise ValueError(f"{what} returned {bad} NaN or infinite value(s); refusing to average them in (check the "
                         "model's conversion: delete its folder in the sas cache to rebuild it)")


@torch.inference_mode()
def fluency_nll(contexts: list[str], texts: list[str], batch_size: int = 32, name: str = FLUENCY_MODEL
                ) -> torch.Tensor:
    """Summed NLL and token count of each ``texts[i]`` given ``contexts[i]`` under the fluency model (SmolLM2),
    batched. Returns ``[n, 2]`` (nll, n_tokens), float64; an empty text gives ``(0, 0)``."""
    if len(contexts) != len(texts):
        raise ValueError(f"one context per text: got {len(contexts)} contexts and {len(texts)} texts")
    hf, tok = _fluency_model(name)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rows = []
    for i in range(0, len(texts), batch_size):
        ctx = [tok(c, add_special_tokens=False).input_ids or [tok.eos_token_id] for c in contexts[i:i + batch_size]]
        cont = [tok(t, add_special_tokens=False).input_ids for t in texts[i:i + batch_size]]
        seqs = [c + t for c, t in zip(ctx, cont)]
        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), pad)
        mask = torch.zeros(len(seqs), n, dtype=torch.long)
        for j, s in enumerate(seqs):  # right padding: positions stay 0.. for every row
            ids[j, :len(s)], mask[j, :len(s)] = torch.tensor(s), 1
        logp = torch.log_softmax(hf(input_ids=ids, attention_mask=mask).logits.float(), -1)
        for j, (c, t) in enumerate(zip(ctx, cont)):
            if not t:
                rows.append((0.0, 0))
                continue
            pos = torch.arange(len(c) - 1, len(c) + len(t) - 1)
            rows.append((-logp[j, pos, torch.tensor(t)].sum().item(), len(t)))
    out = torch.tensor(rows, dtype=torch.float64)
    _refuse_nan(out, f"the fluency model {name}")
    return out


def kl_texts(n: int = N_KL_TEXTS) -> list[str]:
    """The held-out texts the KL budget is measured on (English Wikipedia, never used to train the SAEs)."""
    from ..load.data import load_text_sample

    return load_text_sample()[-n:]  # the end of the sample: the side-effect perplexity uses its start


@torch.inference_mode()
def steering_kl(model, vector, layer: int, multipliers, texts: list[str] | None = None,
                max_tokens: int = KL_MAX_TOKENS, batch_size: int = 4) -> list[float]:
    """Per multiplier: the mean over token positions of ``KL(unsteered || steered)`` of the next-token distribution,
    on ``texts`` (default :func:`kl_texts`, each cut to ``max_tokens``), steering ``layer`` at every position (an
    ActAdd vector at the text's first positions, as it steers a prompt's). Texts go ``batch_size`` at a time (a 262k vocabulary makes each position's distribution 1 MB)."""
    from ..forward.run import encode, logits_at, pad_left, pad_id, run_resid
    from ..load.device import block_device
    from ..steering import steer

    texts = kl_texts() if texts is None else texts
    seqs = [s[:max_tokens] for s in encode(model, texts)]
    where = "front" if getattr(vector, "positions", None) == "front" else "all"
    total, count = torch.zeros(len(multipliers), dtype=torch.float64), 0
    for i in range(0, len(seqs), batch_size):
        tokens, mask, left = pad_left(seqs[i:i + batch_size], pad_id(model), block_device(model))
        keep = mask.bool()

        def logp():
            return torch.log_softmax(logits_at(model, run_resid(model, tokens, mask, left)[keep]).float(), -1)

        base = logp()
        for j, m in enumerate(multipliers):
            with steer(model, vector, float(m), [layer], where):
                lp = logp()
            kl = (base.exp() * (base - lp)).sum(-1)
            _refuse_nan(kl, "the KL of the steered model")
            total[j] += kl.double().sum()
        count += int(keep.sum())
    return (total / count).tolist()
