"""Open-ended steering tasks that a small base model shows: sentiment and topic.

``sentiment``: continue neutral prompts (DExperts), score the continuations with VADER (compound,
-1..+1), also with the steering vector's own words masked (ActAdd's "Love"/"Hate" leak into the
text and VADER would score them), and measure fluency as the perplexity of the continuations under
the unsteered model. ``topic``: ActAdd's wedding vector, scored by the share of continuations that
mention weddings.
"""

from __future__ import annotations

import re
import time
from typing import Sequence

import torch

from ..forward.generate import generate
from ..forward.likelihood import continuation_nll
from ..load.data import load_neutral_prompts
from ..steering import steer
from ..steering.vector import SteeringVector

TASKS = ("sentiment", "topic")

# 50 antonym pairs x 2 templates = 100 contrastive pairs for a sentiment CAA vector
_ADJECTIVES = [
    ("good", "bad"), ("happy", "sad"), ("wonderful", "terrible"), ("great", "awful"), ("excellent", "horrible"),
    ("beautiful", "ugly"), ("pleasant", "unpleasant"), ("delightful", "dreadful"), ("joyful", "miserable"),
    ("amazing", "disgusting"), ("lovely", "nasty"), ("fantastic", "atrocious"), ("brilliant", "pathetic"),
    ("cheerful", "gloomy"), ("kind", "cruel"), ("friendly", "hostile"), ("hopeful", "hopeless"),
    ("calm", "anxious"), ("satisfied", "disappointed"), ("grateful", "resentful"), ("proud", "ashamed"),
    ("successful", "failed"), ("exciting", "boring"), ("fun", "tedious"), ("positive", "negative"),
    ("peaceful", "violent"), ("healthy", "sick"), ("safe", "dangerous"), ("gentle", "harsh"),
    ("generous", "selfish"), ("honest", "deceitful"), ("warm", "cold"), ("bright", "dark"),
    ("charming", "repulsive"), ("glorious", "shameful"), ("superb", "dismal"), ("perfect", "flawed"),
    ("enjoyable", "painful"), ("nice", "mean"), ("loving", "hateful"), ("thrilled", "upset"),
    ("relaxed", "stressed"), ("optimistic", "pessimistic"), ("marvelous", "lousy"), ("fortunate", "unlucky"),
    ("admirable", "despicable"), ("encouraging", "discouraging"), ("comfortable", "uncomfortable"),
    ("graceful", "clumsy"), ("triumphant", "defeated"),
]
_TEMPLATES = ["I feel {}", "This is {}"]
TOPIC_WORDS = re.compile(r"\b(wedding|weddings|bride|brides|groom|grooms|bridal|marriage|marriages|married|marry|"
                         r"marrying|honeymoon|engagement|engaged|fianc[eé]e?|vows?|ceremony|reception)\b", re.I)
ACTADD_PROMPTS = {"sentiment": ("Love", "Hate"),
                  "topic": ("I talk about weddings constantly", "I do not talk about weddings constantly")}
DEFAULT_LAYERS = {"sentiment": [2, 4, 6, 8, 10, 12], "topic": [2, 4, 6, 8, 10, 12]}
DEFAULT_MULTIPLIERS = {"caa": [-2.0, -1.0, 0.0, 1.0, 2.0], "actadd": [-10.0, -5.0, 0.0, 5.0, 10.0]}


def sentiment_pairs() -> tuple[list[str], list[str]]:
    """100 positive / negative sentences that differ in one adjective."""
    pos = [t.format(p) for p, _ in _ADJECTIVES for t in _TEMPLATES]
    neg = [t.format(n) for _, n in _ADJECTIVES for t in _TEMPLATES]
    return pos, neg


def topic_pairs() -> tuple[list[str], list[str]]:
    """Sentences about weddings / about other things, for a CAA topic vector."""
    pos = [f"Let's talk about the {w}." for w in ("wedding", "bride", "groom", "marriage", "honeymoon")]
    neg = [f"Let's talk about the {w}." for w in ("weather", "economy", "engine", "election", "harvest")]
    return pos, neg


def mask_words(vector: SteeringVector | None) -> re.Pattern | None:
    """A regex of the words in an ActAdd vector's prompts (with simple inflections)."""
    if vector is None or vector.method != "actadd":
        return None
    words = {w.lower() for k in ("positive", "negative") for w in re.findall(r"[A-Za-z]+", vector.settings[k])}
    stems = sorted({w[:-1] if w.endswith("e") else w for w in words if len(w) > 2})
    return re.compile(r"\b(" + "|".join(stems) + r")\w*", re.I) if stems else None


def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def run_task(model, task: str, vector: SteeringVector | None = None, multiplier: float = 0.0,
             layers: Sequence[int] | None = None, n_prompts: int = 40, max_new_tokens: int = 30, seed: int = 0,
             positions: str | None = None, batch_size: int = 40) -> dict:
    """Generate continuations of ``n_prompts`` neutral prompts under steering and score them.

    Returns ``{"score", "score_masked", "perplexity", "n", "seconds", "texts"}``: ``score`` is the
    mean VADER compound (sentiment) or the share of continuations that mention the topic.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    t0 = time.time()
    prompts = load_neutral_prompts(n_prompts)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=True, top_k=50, seed=seed, batch_size=batch_size)
    if vector is None or multiplier == 0:
        texts = generate(model, prompts, **kwargs)
    else:
        with steer(model, vector, multiplier, layers, positions):
            texts = generate(model, prompts, **kwargs)
    nll = continuation_nll(model, prompts, texts)
    ppl = float(torch.exp(nll[:, 0].sum() / nll[:, 1].sum().clamp(min=1)))
    mask = mask_words(vector)
    masked = [mask.sub("", t) if mask else t for t in texts]
    if task == "sentiment":
        vader = _vader()
        score = [vader.polarity_scores(t)["compound"] for t in texts]
        score_masked = [vader.polarity_scores(t)["compound"] for t in masked]
    else:
        score = [float(bool(TOPIC_WORDS.search(t))) for t in texts]
        score_masked = [float(bool(TOPIC_WORDS.search(t))) for t in masked]
    return {"score": sum(score) / len(score), "score_masked": sum(score_masked) / len(score_masked),
            "perplexity": ppl, "n": len(texts), "seconds": time.time() - t0, "texts": texts}
