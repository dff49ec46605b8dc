"""Offline scorers of steered continuations: one score per continuation, higher = more of the concept.

    scorer = get_scorer("lexicon", words=["wedding", "bride"])
    scorer.score(["The bride wore white.", "It rained."])      # [1.0, 0.0]
    scorer.details([...])                                      # {"mention": [...], "count": [...], "rate": [...]}

Every scorer returns a list with one float per text, so that a caller can bootstrap over
continuations. ``score`` is the scorer's primary number; ``details`` adds the other numbers it computes.
Scorers are registered by name (``SCORERS``); a concept file names one and gives its settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Callable, ClassVar

SCORERS: dict[str, type["Scorer"]] = {}


def register_scorer(name: str) -> Callable[[type], type]:
    """Class decorator: make a :class:`Scorer` subclass available under ``name``."""

    def deco(cls):
        if name in SCORERS:
            raise ValueError(f"a scorer named {name!r} is already registered ({SCORERS[name].__name__})")
        cls.name = name
        SCORERS[name] = cls
        return cls

    return deco


def get_scorer(name: str, **settings) -> "Scorer":
    """The scorer registered as ``name``, built with ``settings``; a clear error for unknown names or settings."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; choose one of {', '.join(sorted(SCORERS))}")
    cls = SCORERS[name]
    allowed = {f.name for f in fields(cls)}
    bad = sorted(set(settings) - allowed)
    if bad:
        raise ValueError(f"scorer {name!r} has no setting(s) {bad}; its settings are {sorted(allowed) or 'none'}")
    return cls(**settings)


@dataclass
class Scorer:
    """Base class: ``score(texts) -> list[float]`` (one per text) and ``details(texts) -> {metric: list}``."""

    name: ClassVar[str] = ""
    primary: ClassVar[str] = "score"

    def details(self, texts: list[str]) -> dict[str, list[float]]:
        raise NotImplementedError

    def score(self, texts: list[str]) -> list[float]:
        """One float per text: the scorer's primary metric (``self.primary``)."""
        return self.details(_texts(texts))[self.primary]


def _texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("score() takes a list of texts, not one string: wrap it as [text]")
    return [str(t) for t in texts]


# --- sentiment -------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@register_scorer("vader")
@dataclass
class VaderScorer(Scorer):
    """VADER compound sentiment (-1..+1) times ``direction``: +1 scores positive sentiment, -1 negative."""

    direction: int = 1
    primary: ClassVar[str] = "score"

    def __post_init__(self):
        if self.direction not in (1, -1):
            raise ValueError(f"vader direction must be +1 (towards positive) or -1 (towards negative), "
                             f"not {self.direction!r}")

    def details(self, texts):
        compound = [_vader().polarity_scores(t)["compound"] for t in _texts(texts)]
        return {"score": [self.direction * c for c in compound], "compound": compound}


# --- topic lexicon ---------------------------------------------------------------------------------------

def _forms(word: str) -> set[str]:
    """A word with its simple English inflections: plural, possessive, -ed, -ing (not derivations such as
    -er, which turn "pet" into "peter"; list those words themselves)."""
    w = word.lower()
    out = {w, w + "s", w + "'s", w + "ed", w + "ing"}
    if w.endswith("e"):
        out |= {w + "d", w[:-1] + "ing"}
    if w.endswith("y") and len(w) > 2 and w[-2] not in "aeiou":
        out |= {w[:-1] + "ies", w[:-1] + "ied"}
    if w.endswith(("s", "x", "ch", "sh")):
        out.add(w + "es")
    return out


def lexicon_pattern(words: list[str]) -> re.Pattern:
    """A case-insensitive regex that matches any of ``words`` (or phrases) as whole words, with simple
    inflections (``recipe`` matches ``recipes``, ``bake`` matches ``baking``; the last word of a phrase inflects)."""
    words = [w.strip() for w in words if w and w.strip()]
    if not words:
        raise ValueError("a lexicon needs at least one word")
    alts = set()
    for w in words:
        *head, last = w.lower().split()
        prefix = r"\s+".join(re.escape(h) for h in head)
        for f in _forms(last):
            alts.add((prefix + r"\s+" if head else "") + re.escape(f))
    # longest first so that "weddings" is preferred over "wedding" inside the alternation
    body = "|".join(sorted(alts, key=len, reverse=True))
    return re.compile(r"(?<![\w-])(?:" + body + r")(?![\w-])", re.I)


_WORD = re.compile(r"\w+(?:['’-]\w+)*")


@register_scorer("lexicon")
@dataclass
class LexiconScorer(Scorer):
    """Topic word list. ``mention``: 1.0 if the text contains any lexicon word, else 0.0 (primary);
    ``count``: how many lexicon words it contains; ``rate``: ``count`` per word of the text (words are
    runs of letters/digits; 0 for an empty text)."""

    words: list[str] = field(default_factory=list)
    primary: ClassVar[str] = "mention"

    def __post_init__(self):
        if not self.words or isinstance(self.words, str):
            raise ValueError("the lexicon scorer needs `words`: a list of topic words, e.g. ['wedding', 'bride']")
        self.pattern = lexicon_pattern(list(self.words))

    def matches(self, text: str) -> list[str]:
        """The lexicon words found in ``text``, in order."""
        return [m.group(0) for m in self.pattern.finditer(text)]

    def details(self, texts):
        count = [len(self.matches(t)) for t in _texts(texts)]
        n_words = [len(_WORD.findall(t)) for t in texts]
        return {"mention": [float(c > 0) for c in count], "count": [float(c) for c in count],
                "rate": [c / n if n else 0.0 for c, n in zip(count, n_words)]}


# --- language --------------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _langid(languages: tuple[str, ...] | None):
    # py3langid (langid.py's numpy port): offline, pure Python + numpy, 97 languages, probabilities
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if languages:
        unknown = sorted(set(languages) - set(ident.nb_classes))
        if unknown:
            raise ValueError(f"py3langid does not know language code(s) {unknown}; use ISO 639-1 codes such as "
                             f"'fr', 'en', 'es'")
        ident.set_languages(list(languages))
    return ident


@register_scorer("language")
@dataclass
class LanguageScorer(Scorer):
    """Offline language identification (py3langid). ``identified``: 1.0 if the text's most likely language
    is ``target`` (primary); ``probability``: the identifier's normalised probability of ``target``.
    ``languages`` restricts the candidates (default: all 97); texts with fewer than ``min_chars``
    letters score 0 (the identifier guesses at random on them)."""

    target: str = "fr"
    languages: list[str] | None = None
    min_chars: int = 3
    primary: ClassVar[str] = "identified"

    def __post_init__(self):
        langs = tuple(sorted(set(self.languages) | {self.target})) if self.languages else None
        ident = _langid(langs)
        if self.target not in ident.nb_classes:
            raise ValueError(f"py3langid does not know the language code {self.target!r}; use an ISO 639-1 code "
                             f"such as 'fr' or 'es'")
        self._langs = langs

    def details(self, texts):
        ident = _langid(self._langs)
        ident_, prob = [], []
        for t in _texts(texts):
            if sum(c.isalpha() for c in t) < self.min_chars:
                ident_.append(0.0)
                prob.append(0.0)
                continue
            ranked = dict(ident.rank(t))
            best = max(ranked, key=ranked.get)
            ident_.append(float(best == self.target))
            prob.append(float(ranked.get(self.target, 0.0)))
        return {"identified": ident_, "probability": prob}
