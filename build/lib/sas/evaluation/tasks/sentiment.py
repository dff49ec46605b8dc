"""Sentiment: continue neutral prompts (DExperts), score each continuation with VADER (compound, -1..+1).

Contrastive pairs: 50 antonym pairs x 2 templates; ActAdd's prompt pair is "Love" / "Hate".
"""

from __future__ import annotations

from .registry import Task, register_task

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


def sentiment_pairs() -> tuple[list[str], list[str]]:
    """100 positive / negative sentences that differ in one adjective."""
    pos = [t.format(p) for p, _ in _ADJECTIVES for t in _TEMPLATES]
    neg = [t.format(n) for _, n in _ADJECTIVES for t in _TEMPLATES]
    return pos, neg


def vader_scores(texts: list[str]) -> list[float]:
    """VADER compound sentiment of each text (-1..+1)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    return [vader.polarity_scores(t)["compound"] for t in texts]


register_task(Task("sentiment", pairs=sentiment_pairs, score=vader_scores, actadd=("Love", "Hate"),
                   description="sentiment of continuations of neutral prompts (VADER compound)"))
