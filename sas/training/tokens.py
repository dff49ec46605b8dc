"""The token stream an SAE trains on: a text corpus and the prompts steering reads, in a fixed, resumable order.

The corpus is tokenised once into a ``uint32`` file in the cache (``$SAS_CACHE/tokens/``, keyed by the files'
names, sizes and the tokenizer), documents joined by a blank line. It is cut into contexts of ``context - 1``
tokens, each read with BOS in front. The steering prompts (CAA A/B questions with each answer, sentiment prompts
with their continuations; the contexts that steering reads) are tokenised apart, one context each. A ``Plan``
groups both into forward batches (prompts sorted by length, so that a batch pads little) and fixes their order
with a seed: batch ``i`` of a plan is always the same tokens, so a run resumes by batch number.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..load.models import cache_dir
from ..hashing import files_sample_hash, held_out_fifth

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # the staged data sets beside a checkout


# ----------------------------------------------------------------------------------------- corpus
def corpus_files(paths: list[str | Path]) -> list[Path]:
    """The ``.jsonl`` / ``.txt`` files under ``paths``, in a fixed order; refuses held-out text and empty paths."""
    files: list[Path] = []
    for p in map(Path, paths):
        if "heldout" in str(p.resolve()):
            raise ValueError(f"{p} is a held-out corpus (for measuring only): train on the training shards, e.g. "
                             "../shared/data/corpus/enwiki-2014")
        if not p.exists():
            raise FileNotFoundError(f"no corpus at {p}; pass --corpus a folder or file of jsonl lines with a 'text' "
                                    "field (e.g. ../shared/data/corpus/enwiki-2014)")
        found = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.suffix in (".jsonl", ".txt"))
        held = [f for f in found if "heldout" in f.name]
        if held:
            raise ValueError(f"{held[0]} is held-out text (for measuring only): remove it from the training corpus")
        files += found
    if not files:
        raise FileNotFoundError(f"no .jsonl or .txt files under {[str(p) for p in paths]}; pass --corpus a folder of "
                                "jsonl lines with a 'text' field (e.g. ../shared/data/corpus/enwiki-2014)")
    return files


def corpus_texts(files: list[Path]):
    """Yield document texts: the ``text`` field of each jsonl line, or each blank-line paragraph of a txt file."""
    for f in files:
        if f.suffix == ".jsonl":
            with open(f, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            text = json.loads(line).get("text", "")
                        except (json.JSONDecodeError, AttributeError) as e:
                            raise ValueError(f"{f}:{n} is not a JSON object with a 'text' field: {e}") from e
                        if isinstance(text, str) and text.strip():
                            yield text
        else:
            for para in f.read_text(encoding="utf-8").split("\n\n"):
                if para.strip():
                    yield para


def _files_key(files: list[Path], tokenizer) -> str:
    """A key for the token file: the tokenizer, and each file's name, size and first and last MiB."""
    return files_sample_hash(tokenizer.name_or_path.encode() + str(len(tokenizer)).encode(), files)


def corpus_tokens(files: list[Path], tokenizer, show_progress: bool = True) -> np.ndarray:
    """The corpus as one ``uint32`` token array (documents joined by a blank line), cached by content key."""
    folder = cache_dir() / "tokens"
    path = folder / f"corpus-{_files_key(files, tokenizer)}.u32"
    if path.exists():
        return np.memmap(path, dtype=np.uint32, mode="r")
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as out:
        batch: list[str] = []
        bar = tqdm(desc="tokenising the corpus", unit="doc", disable=not show_progress, mininterval=5)
        for text in list(corpus_texts(files)) + [None]:
            if text is not None:
                batch.append(text)
            if batch and (len(batch) == 256 or text is None):
                for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
                    np.asarray(ids + sep, dtype=np.uint32).tofile(out)
                bar.update(len(batch))
                batch = []
        bar.close()
    tmp.replace(path)  # a token file under its final name is always complete
    return np.memmap(path, dtype=np.uint32, mode="r")


# --------------------------------------------------------------------------------- steering prompts
def steering_prompts(data: Path = SHARED_DATA) -> list[str]:
    """The contexts steering reads, from ``data``: CAA A/B questions of the *generate* splits with each answer,
    and the sentiment prompts with their continuations whose md5 puts them in the training 80% (the other 20%
    stay unseen). Fixed order."""
    caa = data / "caa" / "datasets" if (data / "caa" / "datasets").is_dir() else data / "caa"
    if not (caa / "generate").is_dir():
        raise FileNotFoundError(f"no CAA data under {data}: pass a folder holding caa/datasets/ and sentiment/ "
                                "(../shared/data) or the package's own sas/data, or --prompt-frac 0")
    prompts = []
    for f in sorted((caa / "generate").glob("*/generate_dataset.json")):
        for item in json.loads(f.read_text()):
            for ans in (item["answer_matching_behavior"], item["answer_not_matching_behavior"]):
                prompts.append(f"{item['question']}\n\nAnswer: {ans}")
    for f in sorted((data / "sentiment").glob("*_prompts.jsonl")):
        for line in open(f, encoding="utf-8"):
            row = json.loads(line)
            if not held_out_fifth(row["prompt"]["text"]):  # 80% train
                prompts.append(row["prompt"]["text"] + row["continuation"]["text"])
    return prompts


# ------------------------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """Forward batches in a fixed order. Each batch is a list of sequences; a sequence is either
    ``("c", start)`` (corpus tokens ``start : start + context - 1``) or ``("p", i)`` (prompt ``i``)."""

    batches: list[list[tuple[str, int]]]
    corpus: np.ndarray
    prompts: list[list[int]]
    context: int
    bos: int

    def n_tokens(self, i: int) -> int:
        """Training tokens in batch ``i`` (BOS not counted)."""
        return sum(self.context - 1 if kind == "c" else len(self.prompts[j]) for kind, j in self.batches[i])

    def tokens(self, i: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``i`` as ``(tokens [rows, width], keep [rows, width])``: BOS first, right-padded with ``pad``;
        ``keep`` marks the real non-BOS tokens (causal attention: padding on the right changes no real token)."""
        rows = [self.corpus[j:j + self.context - 1].astype(np.int64) if kind == "c" else np.asarray(self.prompts[j])
                for kind, j in self.batches[i]]
        width = 1 + max(len(r) for r in rows)
        tokens = torch.full((len(rows), width), pad, dtype=torch.long)
        keep = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, ids in enumerate(rows):
            tokens[r, 0] = self.bos
            tokens[r, 1:1 + len(ids)] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
            keep[r, 1:1 + len(ids)] = True
        return tokens, keep


def make_plan(corpus: np.ndarray, prompts: list[list[int]], n_tokens: int, context: int, batch_rows: int,
              prompt_frac: float, bos: int, seed: int = 0) -> Plan:
    """Batches holding about ``n_tokens`` training tokens, ``prompt_frac`` of them from ``prompts`` (each prompt
    is used once before any is used again), the rest from ``corpus`` contexts in a seeded random order; the
    batches' order is shuffled with the same seed so prompts are spread over the whole run.
    Raises ``ValueError`` when the corpus holds fewer tokens than asked."""
    rng = random.Random(seed)
    span = context - 1
    n_ctx = len(corpus) // span
    want_prompt = int(prompt_frac * n_tokens) if prompts else 0
    want_corpus = n_tokens - want_prompt
    if want_corpus > n_ctx * span:
        raise ValueError(f"the corpus holds {n_ctx * span:,} tokens of training contexts, fewer than the "
                         f"{want_corpus:,} asked ({n_tokens:,} minus {prompt_frac:.0%} from prompts): pass more "
                         "--corpus folders or fewer --tokens")
    starts = list(range(n_ctx))
    rng.shuffle(starts)
    seqs_c = [("c", s * span) for s in starts[:-(-want_corpus // span)]]
    seqs_p: list[tuple[str, int]] = []
    got, passes = 0, 0
    while got < want_prompt:
        order = list(range(len(prompts)))
        random.Random(seed + 1 + passes).shuffle(order)
        for j in order:
            if got >= want_prompt:
                break
            seqs_p.append(("p", j))
            got += len(prompts[j])
        passes += 1
    # prompts: sorted by length within windows so each batch pads little, yet every pass stays mixed
    window = batch_rows * 16
    seqs_p = [s for w in range(0, len(seqs_p), window)
              for s in sorted(seqs_p[w:w + window], key=lambda s: len(prompts[s[1]]))]
    batches = [seqs_c[i:i + batch_rows] for i in range(0, len(seqs_c), batch_rows)]
    batches += [seqs_p[i:i + batch_rows] for i in range(0, len(seqs_p), batch_rows)]
    rng.shuffle(batches)
    return Plan(batches, corpus, prompts, context, bos)
