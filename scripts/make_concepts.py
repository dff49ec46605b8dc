"""Write the shipped concept files sas/data/concepts/*.yaml from the hand-written texts in concept_texts.py.

    PYTHONPATH=. python scripts/make_concepts.py

Checks as it writes: every positive topic text mentions its lexicon and no negative text does; every
file loads back through sas.concepts.load_concept.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from concept_texts import (ADJECTIVES, NEUTRAL_PHRASES, PARALLEL, SENTIMENT_TEMPLATES, SENTIMENT_WORDS,  # noqa: E402
                           TASK_ADJECTIVES, TOPIC_TEMPLATES, TOPICS)

from sas.concepts import CONCEPT_DIR, TASK_DIR, Lexicon, load_concept  # noqa: E402
from sas.files import write_text  # noqa: E402

LICENSE = "MIT; written for sas"


def write(name: str, d: dict, folder: Path = CONCEPT_DIR) -> None:
    path = folder / f"{name}.yaml"
    text = yaml.safe_dump(d, allow_unicode=True, sort_keys=False, width=120)
    write_text(path, text)  # atomic: a reader never sees half a file
    c = load_concept(path)
    print(f"{name}: {len(c.pairs)} pairs, scorer {c.scorer_name}, {len(c.concept_words)} concept words")


def topic_pairs(phrases: list[str]) -> list[dict]:
    """Every frame with every topic phrase; the negative side puts a mundane phrase in the same frame."""
    out, k = [], 0
    for t in TOPIC_TEMPLATES:
        for p in phrases:
            out.append({"positive": t.format(p), "negative": t.format(NEUTRAL_PHRASES[k % len(NEUTRAL_PHRASES)])})
            k += 1
    return out


def main() -> None:
    CONCEPT_DIR.mkdir(parents=True, exist_ok=True)
    all_words = [w for _, _, lex, _ in TOPICS.values() for w in lex]
    neutral = Lexicon(all_words)
    bad = [p for p in NEUTRAL_PHRASES + TOPIC_TEMPLATES if neutral.search(p)]
    assert not bad, f"neutral phrases or frames mention a topic: {bad}"
    for name, (desc, phrases, lex, prefix) in TOPICS.items():
        pat = Lexicon(lex)
        miss = [p for p in phrases if not pat.search(p)]
        assert not miss, f"{name}: positive phrases the lexicon does not match: {miss}"
        assert 30 <= len(lex) <= 80, f"{name}: {len(lex)} lexicon words, want 30..80"
        write(name, {"name": name, "description": desc, "license": LICENSE,
                     "scorer": {"name": "lexicon", "words": lex}, "prefix": prefix, "prompts": "neutral",
                     "pairs": topic_pairs(phrases)})
    pos = [t.format(a) for i, (a, _) in enumerate(ADJECTIVES) for t in
           (SENTIMENT_TEMPLATES[i % 10], SENTIMENT_TEMPLATES[(i + 3) % 10])]
    neg = [t.format(b) for i, (_, b) in enumerate(ADJECTIVES) for t in
           (SENTIMENT_TEMPLATES[i % 10], SENTIMENT_TEMPLATES[(i + 3) % 10])]
    for name, sign, (a, b), words, prefix in (
            ("sentiment-positive", 1, (pos, neg), SENTIMENT_WORDS["positive"],
             "The following text is happy, warm and positive.\n\n"),
            ("sentiment-negative", -1, (neg, pos), SENTIMENT_WORDS["negative"],
             "The following text is sad, bitter and negative.\n\n")):
        write(name, {"name": name, "license": LICENSE,
                     "description": f"Sentiment towards {name.split('-')[1]} (VADER compound, direction {sign:+d}); "
                                    "the same pairs as its opposite, sides swapped.",
                     "scorer": {"name": "vader", "direction": sign}, "prefix": prefix, "prompts": "neutral",
                     "concept_words": words, "pairs": [{"positive": p, "negative": n} for p, n in zip(a, b)]})
    # sas 0.1's sentiment task (`--task sentiment`), in tasks/ so that the benchmark's default concepts stay the
    # thirteen: the first two frames for every adjective, ActAdd's Love/Hate; no concept words, so every neutral
    # prompt is kept (as the task did)
    frames = SENTIMENT_TEMPLATES[:2]
    write("sentiment", {"name": "sentiment", "license": LICENSE,
                        "description": "Sentiment of continuations of neutral prompts (VADER compound), with the pairs "
                                       "and ActAdd prompts of sas 0.1's sentiment task; `--task sentiment` runs it.",
                        "scorer": {"name": "vader", "direction": 1},
                        "prefix": "The following text is happy, warm and positive.\n\n", "prompts": "neutral",
                        "actadd": ["Love", "Hate"],
                        "pairs": [{"positive": t.format(a), "negative": t.format(b)} for a, b in TASK_ADJECTIVES
                                  for t in frames]}, TASK_DIR)
    for name, code, col, words, prefix in (
            ("french", "fr", 1, ["French", "France", "Paris", "français", "française"],
             "The following text is written in French. Le texte suivant est écrit en français.\n\n"),
            ("spanish", "es", 2, ["Spanish", "Spain", "Madrid", "español", "española"],
             "The following text is written in Spanish. El siguiente texto está escrito en español.\n\n")):
        write(name, {"name": name, "license": LICENSE,
                     "description": f"Writing in {name.title()}: English sentences against their {name.title()} "
                                    "translations (same meaning).",
                     "scorer": {"name": "language", "target": code}, "prefix": prefix, "prompts": "neutral",
                     "concept_words": words,
                     "pairs": [{"positive": row[col], "negative": row[0]} for row in PARALLEL]})


if __name__ == "__main__":
    main()
