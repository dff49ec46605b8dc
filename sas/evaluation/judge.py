"""AxBench's LM judge: concept, instruction and fluency ratings (0-2 each) from any OpenAI-compatible endpoint.

    judge = Judge("http://127.0.0.1:8000/v1", "gpt-4o-mini", cache_dir="runs/judge")
    rows = judge.judge("sports", "Tell me about your weekend.", ["We played football ...", ...])
    rows[0] == {"concept": 2.0, "instruction": 1.0, "fluency": 2.0, "aggregate": 1.5,
                "concept_reply": "... Rating: [[2]]", "instruction_reply": ..., "fluency_reply": ...,
                "unparsed": []}

The three prompts, the rating parser and the aggregate (the harmonic mean of the three ratings, 0 when any is 0)
are AxBench's (Wu et al. 2025), copied from stanfordnlp/axbench at commit
e9b8cd4783c983e350d78af76f3fb2b8b15fc7d3:
- the templates verbatim from ``axbench/evaluators/prompt_templates.py``;
- the parser and ``harmonic_mean`` from ``axbench/evaluators/lm_judge.py`` (``LMJudgeEvaluator``):
  the text after the last ``Rating:``, first line, ``[``/``]`` removed, trailing ``.``, quotes and ``*``
  stripped, ``float()``; a reply with no ``Rating:``, a value that does not parse, or one outside 0..2 rates 0;
- each prompt is sent alone as one user message (``axbench/models/language_models.py``) and the reply stripped.

One deliberate difference: AxBench samples its judge at temperature 0.7 (``axbench/scripts/evaluate.py``);
here the default is 0 so that a judgment is reproducible and its cache entry means something. Pass
``temperature=0.7`` to match AxBench.

Replies are cached in ``cache_dir/judge.sqlite`` keyed by the sha256 of (model, prompt, temperature, max_tokens):
a rerun sends nothing that was answered before. Needs the ``openai`` package (in the ``serve`` extra).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from ..hashing import json_hash

logger = logging.getLogger(__name__)

AXBENCH_SOURCE = "github.com/stanfordnlp/axbench@e9b8cd4783c983e350d78af76f3fb2b8b15fc7d3"
ASPECTS = ("concept", "instruction", "fluency")
DEFAULT_RATING = 0.0  # LMJudgeEvaluator.DEFAULT_RATING: what an unparsable or out-of-range rating counts as
MIN_RATING, MAX_RATING = 0.0, 2.0

# ---- Verbatim from stanfordnlp/axbench, axbench/evaluators/prompt_templates.py at commit
# ---- e9b8cd4783c983e350d78af76f3fb2b8b15fc7d3 (the backslash line continuations are theirs: they join lines).
UNIDIRECTIONAL_PAIRWISE_EVALUATION_CONCEPT_RELEVANCE_TEMPLATE = """[System]
Please act as an impartial judge and evaluate whether the specified concept is \
presented in the sentence fragment provided below. Focus solely on whether the concept is \
clearly incorporated, without regard for grammar or logical coherence.

Begin your evaluation by providing a short explanation of whether the concept is \
clearly incorporated. Point out references to the concept in the fragment, noting any \
minimal or awkward incorporations. After providing your explanation, rate the concept's \
relevance on a scale from 0 to 2, where 0 indicates the concept is not present at all, \
1 indicates the concept is somewhat present but minimally or awkwardly incorporated, \
and 2 indicates the concept is more fully and effectively incorporated, with stronger and \
more natural integration. Provide your rating using this exact format: "Rating: [[score]]".

[Concept Start]
{concept}
[Concept End]

[Sentence Fragment Start]
{sentence}
[Sentence Fragment End]
"""

UNIDIRECTIONAL_PAIRWISE_EVALUATION_INSTRUCTION_RELEVANCE_TEMPLATE = """[System]
Please act as an impartial judge and evaluate whether the \
sentence fragment provided below is related to the instruction. Focus solely \
on the degree of relatedness in terms of topic, regardless of grammar, coherence, or \
informativeness.

Begin your evaluation by providing a brief explanation of whether the \
sentence is related to the instruction, and point out references \
related to the instruction. After providing your explanation, rate the instruction \
relevance on a scale from 0 to 2, where 0 indicates the sentence is unrelated to the \
instruction, 1 indicates it is somewhat related but only minimally or indirectly relevant in terms of topic, \
and 2 indicates it is more clearly and directly related to the instruction. Provide your rating \
using this exact format: "Rating: [[score]]".

[Instruction Start]
{instruction}
[Instruction End]

[Sentence Fragment Start]
{sentence}
[Sentence Fragment End]
"""

UNIDIRECTIONAL_PAIRWISE_EVALUATION_FLUENCY_TEMPLATE = """[System]
Please act as an impartial judge and evaluate the fluency of the \
sentence fragment provided below. Focus solely on fluency, disregarding \
its completeness, relevance, coherence with any broader context, or informativeness.

Begin your evaluation by briefly describing the fluency of the sentence, noting any \
unnatural phrasing, awkward transitions, grammatical errors, or repetitive structures that \
may hinder readability. After providing your explanation, rate the sentence's fluency \
on a scale from 0 to 2, where 0 indicates the sentence is not fluent and highly unnatural \
(e.g., incomprehensible or repetitive), 1 indicates it is somewhat fluent but contains noticeable \
errors or awkward phrasing, and 2 indicates the sentence is fluent and almost perfect. \
Provide your rating using this exact format: "Rating: [[score]]".

[Sentence Fragment Start]
{sentence}
[Sentence Fragment End]
"""

# ---- End of the verbatim copy.

TEMPLATES = {"concept": UNIDIRECTIONAL_PAIRWISE_EVALUATION_CONCEPT_RELEVANCE_TEMPLATE,
             "instruction": UNIDIRECTIONAL_PAIRWISE_EVALUATION_INSTRUCTION_RELEVANCE_TEMPLATE,
             "fluency": UNIDIRECTIONAL_PAIRWISE_EVALUATION_FLUENCY_TEMPLATE}


class JudgeError(RuntimeError):
    """The judge endpoint could not be used (unreachable, refused the model or key, or a server error)."""


def judge_prompts(concept: str, instruction: str, continuation: str) -> dict[str, str]:
    """The three prompts for one continuation, ``{"concept", "instruction", "fluency"}``, filled in as
    ``LMJudgeEvaluator._get_all_ratings_from_data`` fills them (``continuation`` is AxBench's ``sentence``,
    the steered generation without its prompt; ``instruction`` is AxBench's ``original_prompt``)."""
    return {"concept": TEMPLATES["concept"].format(concept=concept, sentence=continuation),
            "instruction": TEMPLATES["instruction"].format(instruction=instruction, sentence=continuation),
            "fluency": TEMPLATES["fluency"].format(sentence=continuation)}


def _rating(reply: str) -> float | None:
    """AxBench's rating of one reply, or None where AxBench falls back to its default of 0."""
    # LMJudgeEvaluator._get_rating_from_completion, then the checks of _get_ratings_from_completions
    if "Rating:" not in reply:
        return None
    text = reply.split("Rating:")[-1].strip()
    text = text.split("\n")[0].strip()
    text = text.replace("[", "").replace("]", "")
    text = text.rstrip(".").strip('"').strip("'").strip("*").strip()
    try:
        rating = float(text)
    except ValueError:
        return None
    return rating if MIN_RATING <= rating <= MAX_RATING else None  # NaN fails both comparisons, as in AxBench


def parse_rating(reply: str) -> float:
    """The 0-2 rating in a judge's ``reply`` (``"... Rating: [[1]]"`` -> 1.0), AxBench's parser; a reply
    without a valid rating gives 0.0, as AxBench's ``DEFAULT_RATING``."""
    rating = _rating(reply)
    return DEFAULT_RATING if rating is None else rating


def harmonic_mean(scores) -> float:
    """AxBench's aggregate of the three ratings: their harmonic mean, and 0 when any rating is 0."""
    scores = list(scores)
    if 0 in scores:  # "Return 0 if any score is 0 to maintain strict evaluation" (lm_judge.py)
        return 0.0
    return len(scores) / sum(1 / s for s in scores)


COLUMNS = ("key", "model", "temperature", "max_tokens", "prompt", "reply")


class ReplyCache:
    """Judge replies on disk: an sqlite file keyed by sha256 of (model, prompt, temperature, max_tokens).

    Each reply is committed as it arrives (a crash keeps what was answered); WAL mode lets several
    processes share one file."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        try:
            with self._lock, self._db:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, "
                                 "temperature REAL, max_tokens INTEGER, prompt TEXT, reply TEXT)")
                columns = [r[1] for r in self._db.execute("PRAGMA table_info(replies)")]
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise ValueError(f"{self.path} is not a judge cache sas can read ({e}); remove it (the judge is asked "
                             "again) or give another --out") from e
        if columns != list(COLUMNS):
            self._db.close()
            raise ValueError(f"{self.path} is an sqlite file with another `replies` table (columns {columns}), not a "
                             "sas judge cache; remove it (the judge is asked again) or give another --out")

    @staticmethod
    def key(model: str, prompt: str, temperature: float, max_tokens: int | None) -> str:
        return json_hash([model, prompt, float(temperature), max_tokens], 64)

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, model: str, prompt: str, temperature: float, max_tokens: int | None, reply: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?)",
                             (key, model, float(temperature), max_tokens, prompt, reply))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _base_url(url: str) -> str:
    parsed = urlparse(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise JudgeError(f"--judge-url {url!r} is not an http(s) URL: give the base URL of an OpenAI-compatible "
                         "API, e.g. http://127.0.0.1:8000/v1")
    # a bare host (http://127.0.0.1:8000) means its OpenAI API under /v1, where the openai client expects it
    return url.rstrip("/") + "/v1" if parsed.path in ("", "/") else url.rstrip("/")


class Judge:
    """AxBench's LM judge on the chat-completions endpoint at ``url`` serving ``model``.

    ``url``: the API's base URL (``http://host:port/v1``; a bare ``http://host:port`` gets ``/v1``);
    ``model``: the model name the server knows; ``cache_dir``: folder of the reply cache (``judge.sqlite``);
    ``api_key``: default ``$OPENAI_API_KEY``, else a placeholder (local servers need none);
    ``concurrency``: requests in flight at once; ``temperature``: 0 (AxBench: 0.7, see the module docstring);
    ``max_tokens``: per reply, None sends none (as AxBench); ``timeout``: seconds per request;
    ``max_retries``: the openai client's retries (with backoff) on connection errors, 408, 429 and 5xx.
    ``sent`` and ``cache_hits`` count the requests sent and the prompts answered from the cache."""

    def __init__(self, url: str, model: str, cache_dir, api_key: str | None = None, concurrency: int = 8,
                 temperature: float = 0.0, max_tokens: int | None = None, timeout: float = 120.0,
                 max_retries: int = 3):
        try:
            import openai
        except ImportError:
            raise JudgeError('the judge needs the openai package: pip install openai==3.57.0 '
                             '(or pip install -e ".[serve]")') from None
        if not isinstance(model, str) or not model.strip():
            raise JudgeError(f"--judge-model {model!r} is empty: give the model name the judge server serves "
                             "(see its /v1/models)")
        if concurrency < 1:
            raise JudgeError(f"concurrency {concurrency} must be at least 1")
        self.url, self.model = _base_url(url), model
        self.temperature, self.max_tokens = temperature, max_tokens
        self.timeout, self.max_retries = timeout, max_retries
        self.concurrency = concurrency
        self.cache = ReplyCache(Path(cache_dir) / "judge.sqlite")
        self._openai = openai
        self.client = openai.OpenAI(base_url=self.url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
                                    timeout=timeout, max_retries=max_retries)
        self.sent = self.cache_hits = 0
        self._count = threading.Lock()

    def judge(self, concept: str, instruction: str | list[str], continuations: list[str]) -> list[dict]:
        """Rate each continuation for ``concept`` and its ``instruction`` with AxBench's three prompts.

        ``instruction``: the prompt that was continued, one for all or a list with one per continuation
        (a benchmark's test prompts; all are sent ``concurrency`` at a time). Returns one dict per
        continuation: ``concept``, ``instruction``, ``fluency`` (ratings 0..2), ``aggregate`` (their harmonic
        mean, 0 when any is 0), ``concept_reply``, ``instruction_reply``, ``fluency_reply`` (the judge's
        stripped replies) and ``unparsed`` (the aspects whose reply had no valid rating and so count 0).
        Raises :class:`JudgeError` when the endpoint fails."""
        if isinstance(continuations, str) or not all(isinstance(c, str) for c in continuations):
            raise ValueError("continuations must be a list of strings (one continuation per string)")
        instructions = [instruction] * len(continuations) if isinstance(instruction, str) else list(instruction)
        if len(instructions) != len(continuations):
            raise ValueError(f"{len(instructions)} instructions for {len(continuations)} continuations: give one "
                             "instruction, or one per continuation")
        given = [instruction] if isinstance(instruction, str) else instructions
        for name, value in [("concept", concept)] + [("instruction", x) for x in given]:
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        prompts = [judge_prompts(concept, x, c) for x, c in zip(instructions, continuations)]
        replies = self.ask([p[a] for p in prompts for a in ASPECTS])
        rows = []
        for i in range(len(prompts)):
            row = {"unparsed": []}
            for j, a in enumerate(ASPECTS):
                reply = replies[len(ASPECTS) * i + j]
                rating = _rating(reply)
                row[a] = DEFAULT_RATING if rating is None else rating
                row[f"{a}_reply"] = reply
                if rating is None:
                    row["unparsed"].append(a)
            row["aggregate"] = harmonic_mean(row[a] for a in ASPECTS)
            rows.append(row)
        bad = sum(len(r["unparsed"]) for r in rows)
        if bad:
            logger.warning("judge %s: %d of %d replies had no valid 'Rating: [[0-2]]' and count 0",
                           self.model, bad, len(ASPECTS) * len(rows))
        return rows

    def ask(self, prompts: list[str]) -> list[str]:
        """The judge's stripped reply to each prompt (one user message each), from the cache where it has
        one; the others are sent ``concurrency`` at a time and cached as they arrive."""
        keys = [ReplyCache.key(self.model, p, self.temperature, self.max_tokens) for p in prompts]
        known = {}
        for k in dict.fromkeys(keys):
            reply = self.cache.get(k)
            if reply is not None:
                known[k] = reply
        todo = {k: p for k, p in zip(keys, prompts) if k not in known}  # one request per distinct prompt
        with self._count:
            self.cache_hits += sum(k in known for k in keys)
        if todo:
            pool = ThreadPoolExecutor(min(self.concurrency, len(todo)))
            try:
                for k, reply in zip(todo, pool.map(self._send, todo.values())):
                    known[k] = reply
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # the first failure stops the queued requests
        return [known[k] for k in keys]

    def _send(self, prompt: str) -> str:
        kw = {} if self.max_tokens is None else {"max_tokens": self.max_tokens}
        try:
            r = self.client.chat.completions.create(messages=[{"role": "user", "content": prompt}], model=self.model,
                                                    temperature=self.temperature, **kw)
        except self._openai.APITimeoutError as e:
            raise JudgeError(f"the judge at {self.url} (--judge-url) did not answer within {self.timeout:g} s "
                             f"(after {self.max_retries} retries); check that the server runs, or raise the "
                             "timeout") from e
        except self._openai.APIConnectionError as e:
            raise JudgeError(f"the judge at {self.url} (--judge-url) could not be reached (after "
                             f"{self.max_retries} retries: {e.__cause__ or e}); start the server or fix --judge-url "
                             "(the base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1)") from e
        except self._openai.APIStatusError as e:
            if e.status_code in (401, 403):
                hint = "set OPENAI_API_KEY (or pass api_key) to a key this server accepts"
            elif e.status_code == 404:
                hint = (f"check --judge-model {self.model!r} against the server's /v1/models, and that --judge-url "
                        "ends at its API root (e.g. .../v1)")
            else:
                hint = f"check --judge-url and --judge-model {self.model!r}"
            raise JudgeError(f"the judge at {self.url} (--judge-url) answered {e.status_code} for model "
                             f"{self.model!r} (--judge-model): {e.message}; {hint}") from e
        if not r.choices:
            raise JudgeError(f"the judge at {self.url} (--judge-url, --judge-model {self.model!r}) sent a reply "
                             "with no choices")
        reply = (r.choices[0].message.content or "").strip()  # LanguageModel.normalize: text.strip()
        self.cache.put(ReplyCache.key(self.model, prompt, self.temperature, self.max_tokens), self.model, prompt,
                       self.temperature, self.max_tokens, reply)
        with self._count:
            self.sent += 1
        return reply

    def close(self) -> None:
        self.client.close()
        self.cache.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def judge_from_args(url: str | None, model: str | None, cache_dir, api_key: str | None = None, **kw) -> Judge | None:
    """The :class:`Judge` for ``sas bench --judge-url URL --judge-model NAME`` (None when neither is given:
    the judge is off by default). ``kw`` goes to :class:`Judge`. Raises :class:`JudgeError` when only one
    of the two is given or either is malformed."""
    if url is None and model is None:
        return None
    if url is None or model is None:
        given, missing = ("--judge-url", "--judge-model") if model is None else ("--judge-model", "--judge-url")
        raise JudgeError(f"{given} needs {missing}: give both (e.g. --judge-url http://127.0.0.1:8000/v1 "
                         "--judge-model gpt-4o-mini) or neither")
    return Judge(url, model, cache_dir, api_key=api_key, **kw)
