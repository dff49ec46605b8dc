"""A benchmark concept as data: contrastive pairs, the prompts to steer, an offline scorer, and the
prefix of the prompting baseline. The file format (YAML or JSONL) is documented in
``sas/data/concepts/README.md``.

    c = get_concept("weddings")                    # a shipped concept
    c = load_concept("my_concept.yaml")            # a concept of your own
    pos, neg = c.positive_texts(), c.negative_texts()
    c.scorer().score(["The bride wore white."])    # [1.0]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

from ..files import STRICT_JSON, parse_json, parse_yaml
from ..load.data import DATA, _read_text, data_hash
from .scorers import Lexicon, LexiconScorer, Scorer, get_scorer

CONCEPT_DIR = DATA / "concepts"
MIN_PAIRS = 64
MIN_PAIRS_FLOOR = 8  # a file may lower `min_pairs` to this, no further: a mean over fewer pairs is mostly noise
PROMPT_SOURCES = ("neutral",)
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


@dataclass(frozen=True)
class ContrastivePair:
    """Two texts that differ in the concept: ``positive`` has it, ``negative`` does not. With a ``prompt``,
    the texts are ``prompt + positive`` and ``prompt + negative`` (a prompt with two completions)."""

    positive: str
    negative: str
    prompt: str = ""

    @property
    def texts(self) -> tuple[str, str]:
        return self.prompt + self.positive, self.prompt + self.negative


@dataclass
class Concept:
    """One concept of the benchmark.

    ``pairs``: at least ``min_pairs`` :class:`ContrastivePair` (for CAA / SAS vectors).
    ``scorer`` / ``scorer_settings``: a name in :data:`sas.concepts.scorers.SCORERS` and its settings.
    ``prefix``: the prompting baseline's text, prepended to each steering prompt (not scored).
    ``prompts``: the steering prompts: ``"neutral"`` (the DExperts neutral pool, where prompts containing
    ``concept_words`` are dropped) or an explicit list (where such prompts are an error).
    ``concept_words``: words whose presence in a prompt would give the concept away; default: the
    lexicon scorer's words.
    """

    name: str
    pairs: list[ContrastivePair]
    scorer_name: str
    prefix: str
    scorer_settings: dict = field(default_factory=dict)
    description: str = ""
    prompts: str | list[str] = "neutral"
    concept_words: list[str] = field(default_factory=list)
    min_pairs: int = MIN_PAIRS
    license: str = ""
    actadd: list[str] | None = None  # ActAdd's prompt pair [positive, negative]; default: the first pair
    source: str = ""  # the file it was read from, for error messages

    def __post_init__(self):
        where = f"concept {self.name!r}" + (f" ({self.source})" if self.source else "")
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"{where}: `name` must be lower-case letters, digits, '-', '_' or '.', e.g. 'weddings'")
        if not isinstance(self.prefix, str):
            raise ValueError(f"{where}: `prefix` must be text, not {type(self.prefix).__name__} {self.prefix!r}; "
                             "quote it, e.g. prefix: 'The following text is about weddings.'")
        if not self.prefix.strip():
            raise ValueError(f"{where}: `prefix` is empty; give the text the prompting baseline prepends to each "
                             "prompt, e.g. 'The following text is about weddings.\\n\\n'")
        self.pairs = [p if isinstance(p, ContrastivePair) else _pair(p, f"{where} pair {i}")
                      for i, p in enumerate(self.pairs)]
        if isinstance(self.min_pairs, bool) or not isinstance(self.min_pairs, int) or self.min_pairs < MIN_PAIRS_FLOOR:
            raise ValueError(f"{where}: `min_pairs` must be a whole number of at least {MIN_PAIRS_FLOOR}, not "
                             f"{self.min_pairs!r} (default {MIN_PAIRS})")
        first: dict = {}
        copies = [(i, first[p]) for i, p in enumerate(self.pairs) if first.setdefault(p, i) != i]
        if copies:
            raise ValueError(f"{where}: pair(s) {[i for i, _ in copies][:10]} repeat earlier pairs (pair "
                             f"{copies[0][0]} is pair {copies[0][1]}); a copy adds no evidence, remove the copies")
        if len(self.pairs) < self.min_pairs:
            raise ValueError(f"{where}: {len(self.pairs)} contrastive pairs, fewer than the minimum {self.min_pairs}; "
                             f"add pairs (or set `min_pairs` lower, at the cost of a noisier vector)")
        same = [i for i, p in enumerate(self.pairs) if p.texts[0].strip() == p.texts[1].strip()]
        if same:
            raise ValueError(f"{where}: pair(s) {same[:10]} have the same text on both sides, e.g. "
                             f"{self.pairs[same[0]].texts[0]!r}; a contrastive pair needs two different texts")
        if self.actadd is not None:
            if (not isinstance(self.actadd, (list, tuple)) or len(self.actadd) != 2
                    or not all(isinstance(t, str) and t.strip() for t in self.actadd) or self.actadd[0] == self.actadd[1]):
                raise ValueError(f"{where}: `actadd` must be two different non-empty texts [positive, negative], "
                                 f"e.g. ['I talk about weddings', 'I talk about invoices'], not {self.actadd!r}")
            self.actadd = [str(t) for t in self.actadd]
        try:
            self._scorer = get_scorer(self.scorer_name, **dict(self.scorer_settings))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where}: {e}") from e
        if not isinstance(self.concept_words, (list, tuple)) or not all(isinstance(w, str) and w.strip() for w in self.concept_words):
            raise ValueError(f"{where}: `concept_words` must be a list of words, e.g. [wedding, bride], not "
                             f"{self.concept_words!r}")
        if not self.concept_words and isinstance(self._scorer, LexiconScorer):
            self.concept_words = list(self._scorer.words)
        if isinstance(self.prompts, str):
            if self.prompts not in PROMPT_SOURCES:
                raise ValueError(f"{where}: unknown prompt source {self.prompts!r}; use one of {PROMPT_SOURCES} "
                                 "or a list of prompts")
        else:
            if not isinstance(self.prompts, (list, tuple)):
                raise ValueError(f"{where}: `prompts` must be 'neutral', a list of texts or a file name, not "
                                 f"{type(self.prompts).__name__}")
            bad = [i for i, p in enumerate(self.prompts) if not isinstance(p, str) or not p.strip()]
            if bad:
                raise ValueError(f"{where}: steering prompt(s) {bad[:10]} are not non-empty texts (e.g. "
                                 f"{self.prompts[bad[0]]!r}); each prompt is one line of text")
            self.prompts = list(self.prompts)
            if not self.prompts:
                raise ValueError(f"{where}: `prompts` is an empty list; give prompts or use 'neutral'")
            bad = [p for p in self.prompts if self.mentions_concept(p)]
            if bad:
                raise ValueError(f"{where}: {len(bad)} steering prompt(s) already contain the concept's words, e.g. "
                                 f"{bad[0]!r} ({self.words.search(bad[0])!r}); remove them, since "
                                 "steering would get credit for words the prompt already had")

    def scorer(self) -> Scorer:
        """The concept's scorer, built from ``scorer_name`` and ``scorer_settings``."""
        return self._scorer

    @property
    def data_hash(self) -> str:
        """A short sha256 of everything that defines the concept (pairs, scorer, settings, prefix, prompts,
        concept words), for resume keys: a changed concept file gets new rows."""
        return data_hash([self.name, [p.texts for p in self.pairs], self.scorer_name, self.scorer_settings,
                          self.prefix, self.prompts, self.concept_words] + ([self.actadd] if self.actadd else []))

    @property
    def actadd_pair(self) -> tuple[str, str]:
        """ActAdd's prompt pair: ``actadd`` if given, else the texts of the first contrastive pair."""
        return tuple(self.actadd) if self.actadd else self.pairs[0].texts

    def positive_texts(self) -> list[str]:
        return [p.texts[0] for p in self.pairs]

    def negative_texts(self) -> list[str]:
        return [p.texts[1] for p in self.pairs]

    @cached_property
    def words(self) -> Lexicon | None:
        """The concept's words as a :class:`Lexicon` (None if it has none)."""
        return Lexicon(self.concept_words) if self.concept_words else None

    def mentions_concept(self, text: str) -> bool:
        """True if ``text`` contains one of the concept's words (whole words, simple inflections)."""
        return bool(self.words and self.words.search(text))


def _pair(row, where: str) -> ContrastivePair:
    if isinstance(row, (list, tuple)):
        if len(row) != 2:
            raise ValueError(f"{where}: a pair given as a list needs exactly two texts [positive, negative]")
        row = {"positive": row[0], "negative": row[1]}
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a pair must be {{'positive': ..., 'negative': ...}} (optionally with 'prompt')")
    missing = [k for k in ("positive", "negative") if k not in row]
    extra = sorted(set(row) - {"positive", "negative", "prompt"})
    if missing or extra:
        raise ValueError(f"{where}: " + (f"missing field(s) {missing}" if missing else f"unknown field(s) {extra}")
                         + "; a pair has 'positive', 'negative' and optionally 'prompt'")
    vals = {k: row.get(k, "") for k in ("positive", "negative", "prompt")}
    for k, v in vals.items():
        if not isinstance(v, str):
            raise ValueError(f"{where}: {k!r} must be a string, got {type(v).__name__}")
    if not vals["positive"].strip() or not vals["negative"].strip():
        raise ValueError(f"{where}: empty positive or negative text")
    return ContrastivePair(**vals)


_FIELDS = {"name", "description", "pairs", "scorer", "scorer_settings", "prefix", "prompts", "concept_words",
           "min_pairs", "license", "actadd"}


def concept_from_dict(d: dict, source: str = "", base: Path | None = None) -> Concept:
    """A :class:`Concept` from the file schema (a mapping); ``base`` resolves a relative ``prompts`` file."""
    where = source or "concept"
    if not isinstance(d, dict):
        raise ValueError(f"{where}: a concept is a mapping with keys {sorted(_FIELDS)}")
    extra = sorted(set(d) - _FIELDS)
    if extra:
        raise ValueError(f"{where}: unknown field(s) {extra}; the fields are {sorted(_FIELDS)}")
    missing = [k for k in ("name", "pairs", "scorer", "prefix") if k not in d]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}; a concept needs name, pairs, scorer and prefix "
                         "(see sas/data/concepts/README.md)")
    scorer = d["scorer"]
    if not isinstance(d.get("scorer_settings") or {}, dict):
        raise ValueError(f"{where}: `scorer_settings` must be a mapping such as {{words: [wedding]}}, not "
                         f"{d.get('scorer_settings')!r}")
    settings = dict(d.get("scorer_settings") or {})
    if isinstance(scorer, dict):
        if "name" not in scorer:
            raise ValueError(f"{where}: `scorer` as a mapping needs a `name`, e.g. {{name: lexicon, words: [...]}}")
        settings = {**{k: v for k, v in scorer.items() if k != "name"}, **settings}
        scorer = scorer["name"]
    prompts = d.get("prompts", "neutral")
    if isinstance(prompts, str) and prompts not in PROMPT_SOURCES:
        prompts = _prompts_file(prompts, where, base)
    if not isinstance(d["pairs"], list):
        raise ValueError(f"{where}: `pairs` must be a list of {{positive, negative}} mappings")
    words = d.get("concept_words") or []
    return Concept(name=d["name"], pairs=d["pairs"], scorer_name=scorer, scorer_settings=settings,
                   prefix=d["prefix"], description=d.get("description", ""), prompts=prompts,
                   concept_words=list(words) if isinstance(words, (list, tuple)) else words,
                   min_pairs=d.get("min_pairs", MIN_PAIRS), license=d.get("license", ""), actadd=d.get("actadd"),
                   source=source)


def _prompts_file(name: str, where: str, base: Path | None) -> list[str]:
    """The prompts of the text file ``name`` (one per line), which must lie in ``base`` (the concept file's
    folder) or under it: a concept file from someone else cannot read other files into the benchmark."""
    if base is None:
        raise ValueError(f"{where}: `prompts` is {name!r}, which is neither {PROMPT_SOURCES} nor a list of texts (a "
                         "file name works in a concept file, relative to it)")
    folder = base.resolve()
    path = (folder / name).resolve()  # symlinks followed: the file itself must be inside
    if not path.is_relative_to(folder):
        raise ValueError(f"{where}: `prompts` is {name!r}, outside the concept file's folder {folder}; put the "
                         "prompts file beside the concept file (or in a folder under it)")
    if not path.exists():
        raise ValueError(f"{where}: `prompts` is {name!r}, which is neither {PROMPT_SOURCES} nor a file (looked at "
                         f"{path}); give a text file with one prompt per line")
    if not path.is_file():
        raise ValueError(f"{where}: `prompts` is {name!r}, and {path} is not a file (a folder?); give a text file "
                         "with one prompt per line")
    return [s for s in _read_text(path).splitlines() if s.strip()]


def _read_jsonl(path: Path) -> dict:
    """JSONL: one header line (the concept's fields, without pairs) and one line per pair."""
    header, pairs = None, []
    for i, line in enumerate(_read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, **STRICT_JSON)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: malformed JSON line ({e.msg}); fix or remove that line") from e
        except (ValueError, RecursionError):
            row = parse_json(line, f"{path}:{i}")  # raises, naming what is wrong
        if isinstance(row, dict) and ("positive" in row or "negative" in row):
            pairs.append(row)
        elif isinstance(row, dict) and header is None:
            header = row
        else:
            raise ValueError(f"{path}:{i}: a second header line (no 'positive'/'negative'); a concept JSONL has one "
                             "header line with the concept's fields and one line per pair")
    if header is None:
        raise ValueError(f"{path}: no header line; add one line such as "
                         '{"name": "weddings", "scorer": {"name": "lexicon", "words": [...]}, "prefix": "..."}')
    if "pairs" in header:
        raise ValueError(f"{path}: the header line has `pairs`; in JSONL put each pair on its own line")
    return {**header, "pairs": pairs}


def load_concept(path: str | Path) -> Concept:
    """Read a concept from a YAML (``.yaml``/``.yml``), JSON (``.json``) or JSONL (``.jsonl``) file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no concept file at {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file (a folder?); give a concept file (.yaml, .json or .jsonl)")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        d = parse_yaml(_read_text(path), str(path))
    elif suffix == ".json":
        d = parse_json(_read_text(path), str(path))
    elif suffix == ".jsonl":
        d = _read_jsonl(path)
    else:
        raise ValueError(f"{path}: unknown concept file type {suffix!r}; use .yaml, .yml, .json or .jsonl")
    return concept_from_dict(d, source=str(path), base=path.parent)


def shipped_concepts() -> dict[str, Concept]:
    """The concepts shipped in ``sas/data/concepts/``, by name (read once per process)."""
    return dict(_shipped())


@lru_cache(maxsize=1)
def _shipped() -> dict[str, Concept]:
    out = {}
    for p in sorted(CONCEPT_DIR.iterdir()):
        if p.suffix.lower() in (".yaml", ".yml", ".json", ".jsonl"):
            c = load_concept(p)
            if c.name in out:
                raise ValueError(f"two shipped concepts are named {c.name!r}: {out[c.name].source} and {p}")
            out[c.name] = c
    return out


def get_concept(name_or_path: str | Path) -> Concept:
    """A shipped concept by name, or a concept file by path."""
    p = Path(name_or_path)
    if p.suffix.lower() in (".yaml", ".yml", ".json", ".jsonl") or p.exists():
        return load_concept(p)
    shipped = shipped_concepts()
    if str(name_or_path) not in shipped:
        raise ValueError(f"unknown concept {name_or_path!r}; choose one of {', '.join(shipped)} or give a file path")
    return shipped[str(name_or_path)]
