"""Offline scorers of steered continuations: one score per continuation, higher = more of the concept.

    scorer = get_scorer("lexicon", words=["wedding", "bride"])
    scorer.score(["The bride wore white.", "It rained."])      # [1.0, 0.0]
    scorer.details([...])                                      # {"mention": [...], "count": [...], "rate": [...]}

Every scorer returns a list with one float per text, so that a caller can bootstrap over
continuations. ``score`` is the scorer's primary number; ``details`` adds the other numbers it computes.
Scorers are registered by name (``SCORERS``); a concept file names one and gives its settings.
"""

from __future__ import annotations

import copy
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
    continuous: ClassVar[str] = "score"  # a graded metric beside a 0/1 primary (the lexicon's rate per word)

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


_WORD = re.compile(r"\w+(?:['-]\w+)*")


def _words(text: str) -> list[re.Match]:
    # curly apostrophes count as straight ones, so "bride’s" is "bride's"
    return list(_WORD.finditer(text.replace("\u2019", "'")))


class Lexicon:
    """A set of words and phrases matched as whole words (a hyphen joins words: "pre-bake" is not "bake"),
    case-insensitively, with simple inflections (``recipe`` matches ``recipes``, ``bake`` matches ``baking``;
    the last word of a phrase inflects). Matching looks words up in a dict, so it is fast on long lists."""

    def __init__(self, words: list[str]):
        if isinstance(words, str):
            raise ValueError(f"a lexicon is a list of words, not one string ({words!r})")
        words = [str(w).strip() for w in words if w and str(w).strip()]
        if not words:
            raise ValueError("a lexicon needs at least one word")
        self.words = words
        self._by_first: dict[str, set[tuple[str, ...]]] = {}
        for w in words:
            parts = [m.group(0).lower() for m in _words(w)]
            if not parts:
                raise ValueError(f"lexicon entry {w!r} has no letters or digits")
            for f in _forms(parts[-1]):
                seq = tuple(parts[:-1]) + (f,)
                self._by_first.setdefault(seq[0], set()).add(seq)
        self._longest = max(len(s) for v in self._by_first.values() for s in v)

    def find(self, text: str) -> list[str]:
        """The lexicon words and phrases in ``text``, in order, longest match first, not overlapping."""
        ws = _words(text)
        low = [m.group(0).lower() for m in ws]
        out, i = [], 0
        while i < len(low):
            cands = self._by_first.get(low[i])
            hit = 0
            if cands:
                for n in range(min(self._longest, len(low) - i), 0, -1):
                    if tuple(low[i:i + n]) in cands:
                        hit = n
                        break
            if hit:
                out.append(text[ws[i].start():ws[i + hit - 1].end()])
                i += hit
            else:
                i += 1
        return out

    def search(self, text: str) -> str | None:
        """The first lexicon word in ``text``, or None."""
        found = self.find(text)
        return found[0] if found else None


@register_scorer("lexicon")
@dataclass
class LexiconScorer(Scorer):
    """Topic word list. ``mention``: 1.0 if the text contains any lexicon word, else 0.0 (primary);
    ``count``: how many lexicon words it contains; ``rate``: ``count`` per word of the text (words are
    runs of letters/digits; 0 for an empty text). For a rate per model token, divide ``count`` by the
    continuation's token count."""

    words: list[str] = field(default_factory=list)
    primary: ClassVar[str] = "mention"
    continuous: ClassVar[str] = "rate"

    def __post_init__(self):
        if not self.words or isinstance(self.words, str):
            raise ValueError("the lexicon scorer needs `words`: a list of topic words, e.g. ['wedding', 'bride']")
        self.lexicon = Lexicon(list(self.words))

    def details(self, texts):
        texts = _texts(texts)
        count = [len(self.lexicon.find(t)) for t in texts]
        n_words = [len(_words(t)) for t in texts]
        return {"mention": [float(c > 0) for c in count], "count": [float(c) for c in count],
                "rate": [c / n if n else 0.0 for c, n in zip(count, n_words)]}


# --- language --------------------------------------------------------------------------------------------

# The language codes of py3langid 0.4.0's model (its ``nb_classes``; tests check this list against it), so that
# a concept file's code is checked without loading the model (several seconds).
LANGID_CODES = frozenset("""
ace af am an ar ary arz as az ba bcl be bg bn br bs ca crh cs cy da de dz el en eo es et eu ext fa fi fo fr fuv fy ga gcf gcr gd gl gom grc gu gug guw ha hbo he hi hr ht hu hy id ig is it ja jv ka kab kik kk km kn ko ku ky la lb lg lij ln lo lt ltg lv mg mk ml mn mr ms mt my ne nl nn no nso oc om or pa pcm pl ps pt qu ro ru rw sa sdh se si sk sl sn so sq sr st sv sw ta te tg th tk tl tr tt ug uk ur uz uzs vec vi vo wa wuu xh yo yue zh zu zxx
""".split())


@lru_cache(maxsize=1)
def _langid_all():
    # py3langid (langid.py's numpy port): offline, pure Python + numpy, normalised probabilities
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as e:
        raise ImportError("the `language` scorer needs py3langid: pip install 'sas[bench]' "
                          "(or pip install py3langid==0.4.0)") from e

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@lru_cache(maxsize=8)
def _langid(languages: tuple[str, ...] | None):
    """The identifier, restricted to ``languages`` (None: all); the model file is read once per process."""
    if not languages:
        return _langid_all()
    ident = copy.copy(_langid_all())  # set_languages rebinds attributes from _full_model: a shallow copy suffices
    ident.set_languages(list(languages))
    return ident


def _check_codes(codes) -> None:
    unknown = sorted(set(codes) - LANGID_CODES)
    if unknown:
        raise ValueError(f"py3langid does not know the language code(s) {unknown}; use ISO 639-1 codes such as "
                         "'fr', 'en', 'es'")


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
    continuous: ClassVar[str] = "probability"

    def __post_init__(self):
        if isinstance(self.languages, str):
            raise ValueError(f"`languages` is a list of codes, not one string ({self.languages!r})")
        _check_codes([self.target, *(self.languages or [])])
        # the identifier itself loads on first use
        self._langs = tuple(sorted(set(self.languages) | {self.target})) if self.languages else None

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
