"""Topic: ActAdd's wedding vector; a continuation scores 1 if it mentions weddings."""

from __future__ import annotations

import re

from .registry import Task, register_task

TOPIC_WORDS = re.compile(r"\b(wedding|weddings|bride|brides|groom|grooms|bridal|marriage|marriages|married|marry|"
                         r"marrying|honeymoon|engagement|engaged|fianc[eé]e?|vows?|ceremony|reception)\b", re.I)


def topic_pairs() -> tuple[list[str], list[str]]:
    """Sentences about weddings / about other things, for a CAA topic vector."""
    pos = [f"Let's talk about the {w}." for w in ("wedding", "bride", "groom", "marriage", "honeymoon")]
    neg = [f"Let's talk about the {w}." for w in ("weather", "economy", "engine", "election", "harvest")]
    return pos, neg


def mentions_weddings(texts: list[str]) -> list[float]:
    """1.0 for each text that mentions weddings, else 0.0."""
    return [float(bool(TOPIC_WORDS.search(t))) for t in texts]


register_task(Task("topic", pairs=topic_pairs, score=mentions_weddings,
                   actadd=("I talk about weddings constantly", "I do not talk about weddings constantly"),
                   description="share of continuations that mention weddings"))
