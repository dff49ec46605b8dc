"""Contrastive A/B data: the seven CAA behaviours, MMLU and TruthfulQA in A/B form, your own files.

Every loader returns a list of :class:`ABPair`. A file of your own uses the CAA schema, as a JSON
list or as JSONL: ``{"question": "...", "answer_matching_behavior": "(A)",
"answer_not_matching_behavior": "(B)"}``.
"""

from __future__ import annotations

import codecs
import json
import random
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from ..files import STRICT_JSON, parse_json
from ..hashing import json_hash

BEHAVIORS = (
    "coordinate-other-ais", "corrigible-neutral-HHH", "hallucination", "myopic-reward",
    "survival-instinct", "sycophancy", "refusal",
)
DATA = Path(str(files("sas") / "data"))


@dataclass(frozen=True)
class ABPair:
    """One A/B question; ``matching`` is the letter of the answer that shows the behaviour."""

    question: str
    matching: str  # e.g. "A"
    not_matching: str  # e.g. "B"


def _letter(answer: str, where: str) -> str:
    m = re.fullmatch(r"\s*\(?\s*([A-Z])\s*\)?\s*", str(answer))
    if not m:
        raise ValueError(f"{where}: answer {answer!r} is not a letter such as '(A)'; "
                         "A/B pairs need letter answers")
    return m.group(1)


def _pair(row: dict, where: str, keys=("answer_matching_behavior", "answer_not_matching_behavior")) -> ABPair:
    qkey = "question" if "question" in row else "prompt"
    missing = [k for k in (qkey, *keys) if k not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}; expected {{'question', '{keys[0]}', '{keys[1]}'}}")
    if not isinstance(row[qkey], str) or not row[qkey].strip():
        raise ValueError(f"{where}: the {qkey} must be non-empty text, not {row[qkey]!r}")
    a, b = _letter(row[keys[0]], where), _letter(row[keys[1]], where)
    if a == b:
        raise ValueError(f"{where}: both answers are ({a}); a contrastive pair needs two different answers")
    return ABPair(row[qkey], a, b)


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_JSON_TYPES = {list: "a list", dict: "an object", str: "a string", int: "a number", float: "a number",
               bool: "true/false", type(None): "null"}


def _read_text(path: Path) -> str:
    """The text of ``path``: UTF-8 (a BOM is fine), or UTF-16/32 with a BOM; ``ValueError`` naming the file else."""
    raw = path.read_bytes()
    codec = next((c for bom, c in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not {codec.upper()} text (byte {e.start}: {e.reason}); save the file as UTF-8") from e


def _read_rows(path: Path) -> list[tuple[dict, str]]:
    """``[(row, where)]`` of a JSON list, a single JSON object (pretty-printed or not), JSONL, or a stream of
    (pretty-printed) JSON objects; ``where`` names the file and item or line for error messages."""
    if not path.exists():
        raise FileNotFoundError(f"no data file at {path}")
    text = _read_text(path)
    try:
        whole = json.loads(text, **STRICT_JSON)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("["):
            raise ValueError(f"{path}: not valid JSON ({e}); use a JSON list or one JSON object per line") from e
        out = _json_lines(path, text)
    except (ValueError, RecursionError):  # NaN/Infinity, a key twice, nesting too deep
        parse_json(text, str(path))  # raises, naming the file and the problem
    else:
        if isinstance(whole, list):
            out = [(r, f"{path} item {i}") for i, r in enumerate(whole)]
        else:
            out = [(whole, f"{path}:1" if "\n" not in text.strip() else f"{path} item 0")]
    for row, where in out:
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object {{\"question\": ...}}, got "
                             f"{_JSON_TYPES.get(type(row), type(row).__name__)}")
    if not out:
        raise ValueError(f"{path}: the data set is empty")
    return out


def _json_lines(path: Path, text: str) -> list[tuple[object, str]]:
    # split on "\n" only: str.splitlines() also splits inside strings at U+2028, U+0085 and other separators
    # that json.dumps(ensure_ascii=False) leaves raw
    out = []
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            out.append((json.loads(line, **STRICT_JSON), f"{path}:{i}"))
        except (ValueError, RecursionError) as e:
            if not isinstance(e, json.JSONDecodeError):
                parse_json(line, f"{path}:{i}")  # raises, naming the line and the problem
            stream = _json_stream(text)  # pretty-printed objects one after another
            if stream is not None:
                return [(r, f"{path} object {k}") for k, r in enumerate(stream)]
            raise ValueError(f"{path}:{i}: malformed JSON line ({e.msg}); fix or remove that line") from e
    return out


def _json_stream(text: str) -> list | None:
    """The JSON values of ``text`` one after another (whitespace between), or None if it is not such a stream."""
    dec, pos, out = json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos == len(text):
            return out
        try:
            value, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            return None
        out.append(value)


def as_pairs(pairs, what: str = "pairs") -> list[ABPair]:
    """``pairs`` as a non-empty list of :class:`ABPair`; ``TypeError`` for a path or text (load it with
    :func:`load_pairs`) or other items, ``ValueError`` if empty."""
    if isinstance(pairs, (str, bytes, Path)):
        raise TypeError(f"{what} must be a list of ABPair, not {type(pairs).__name__} {str(pairs)[:40]!r}; read a "
                        "file with sas.load_pairs(path)")
    pairs = list(pairs)
    if not pairs:
        raise ValueError(f"the data set is empty: {what} needs at least one pair")
    bad = [p for p in pairs if not isinstance(p, ABPair)]
    if bad:
        raise TypeError(f"{what} must hold ABPair items, not {type(bad[0]).__name__}; see sas.load_pairs")
    return pairs


def load_pairs(path: str | Path) -> list[ABPair]:
    """Read A/B pairs from a JSON list or JSONL file in the CAA schema."""
    return [_pair(r, w) for r, w in _read_rows(Path(path))]


def load_behavior(behavior: str, split: str = "generate") -> list[ABPair]:
    """The CAA data of one behaviour: ``split`` is ``generate`` (for vectors) or ``test`` (for scores)."""
    if behavior not in BEHAVIORS:
        raise ValueError(f"unknown behaviour {behavior!r}; choose one of {', '.join(BEHAVIORS)}")
    name = {"generate": "generate/{b}/generate_dataset.json", "test": "test/{b}/test_dataset_ab.json"}
    if split not in name:
        raise ValueError(f"unknown split {split!r}; choose 'generate' or 'test'")
    return load_pairs(DATA / "caa" / name[split].format(b=behavior))


def load_open_ended(behavior: str) -> list[str]:
    """The open-ended test questions of one behaviour."""
    if behavior not in BEHAVIORS:
        raise ValueError(f"unknown behaviour {behavior!r}; choose one of {', '.join(BEHAVIORS)}")
    return [r["question"] for r, _ in _read_rows(DATA / f"caa/test/{behavior}/test_dataset_open_ended.json")]


def load_mmlu() -> list[ABPair]:
    """MMLU in A/B form (570 items); ``matching`` is the correct letter."""
    return [_pair(r, w, ("correct", "incorrect")) for r, w in _read_rows(DATA / "caa/test/mmlu/mmlu.json")]


def load_truthfulqa() -> list[ABPair]:
    """TruthfulQA in A/B form (817 items); ``matching`` is the correct letter."""
    return [_pair(r, w, ("correct", "incorrect"))
            for r, w in _read_rows(DATA / "caa/test/truthfulqa/truthful_qa.json")]


def balance_letters(pairs: list[ABPair], seed: int = 0) -> list[ABPair]:
    """Subsample so the matching answer is (A) exactly as often as (B).

    An unbalanced set steers the answer letter rather than the behaviour (Tan et al. 2024).
    """
    by = {"A": [], "B": []}
    for p in pairs:  # a few survival-instinct items have options (C) to (H): they cannot be balanced
        if p.matching in by and p.not_matching in by:
            by[p.matching].append(p)
    n = min(len(v) for v in by.values())
    if n == 0:
        raise ValueError("cannot balance letters: no pairs with the matching answer at "
                         f"{'(A)' if not by['A'] else '(B)'}; pass balance=False or add such pairs")
    rng = random.Random(seed)
    out = [p for v in by.values() for p in rng.sample(v, n)]
    rng.shuffle(out)
    return out


def data_hash(items) -> str:
    """A short sha256 of a data set, stored in a vector's metadata."""
    return json_hash([getattr(i, "__dict__", i) for i in items])


def load_neutral_prompts(n: int | None = None) -> list[str]:
    """Neutral OpenWebText half-sentences (DExperts), for sentiment steering."""
    rows = [json.loads(line)["prompt"]["text"] for line in (DATA / "sentiment/neutral_prompts.jsonl").open(encoding="utf-8")]
    return rows[:n] if n else rows


def load_text_sample(n: int | None = None) -> list[str]:
    """Held-out English Wikipedia texts (never used to train the shipped SAEs), for perplexity."""
    rows = [json.loads(line)["text"] for line in (DATA / "text/enwiki_heldout_sample.jsonl").open(encoding="utf-8")]
    return rows[:n] if n else rows


def load_actadd_prompts() -> list[str]:
    """The prompts of the ActAdd paper."""
    return [s for s in (DATA / "actadd/prompts.txt").read_text(encoding="utf-8").splitlines() if s.strip()]
