"""Batched generation for the server: concurrent requests run together, each row with its own steering.

One worker thread owns the model. It waits for a request, gathers the others that follow it within a
short window (``window_s`` between arrivals, at most 5 windows) up to ``max_batch`` rows, and generates
them as one left-padded batch with a KV cache, through the decode step ``sas.generate`` uses
(:class:`sas.forward.generate.Decoder`), so a row is computed as ``sas.generate`` computes it. Batching is static: a request that arrives while a batch runs
waits for the next one. Rows leave early (EOS, a stop string, their ``max_tokens``) and their answers go
back at once; the batch ends when every row has.

A row that breaks its batch fails alone: the rows that have sent nothing yet run again, each on its own,
so only the row that cannot run gets the error. A row whose ``cancelled`` flag is set (its client went
away) stops at its next token, or before it starts.

Per-row steering goes through the steering surface (:func:`sas.steering.steer.row_terms`): each (vector, layer,
positions) used by any row becomes one term whose strength is a tensor [batch], zero for the rows that do not ask
for it, and zero strength leaves a row untouched. Each row's answer carries its receipt: what steering edited in it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..forward.generate import Decoder, _sample
from ..forward.run import pad_id
from ..steering.steer import Receipt, Term, row_terms, steer_terms, term_hooks


@dataclass
class Job:
    """One row: prompt token ids, sampling settings, steering, and ``emit(event)`` to report progress.

    ``emit`` receives ``("token", text_delta)`` while generating, then ``("done", info)`` or
    ``("error", exc)``; it is called from the worker thread.
    """

    ids: list[int]
    max_tokens: int
    emit: Callable[[tuple], None]
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 50
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    steer: list[Term] = field(default_factory=list)
    ignore_eos: bool = False
    cancelled: bool = False


def __getattr__(name: str):
    if name == "batch_hooks":  # moved: the steering surface makes every hook
        warnings.warn("sas.serve.batching.batch_hooks moved to sas.steering.steer.row_terms and term_hooks "
                      "(batch_hooks(jobs, model)); the old name goes in sas 0.3", DeprecationWarning, stacklevel=2)
        return lambda jobs, model: term_hooks(model, row_terms([j.steer for j in jobs]))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Row:
    """Decoding state of one row: the text so far and how much of it has been sent."""

    def __init__(self, job: Job, tokenizer, lock, receipt: Receipt):
        self.job, self.tok, self.lock, self.receipt = job, tokenizer, lock, receipt
        self.ids: list[int] = []
        self.sent = 0
        self.done = False
        self.finish = "length"
        self.text = ""
        self.gen = torch.Generator().manual_seed(job.seed) if job.seed is not None else None
        self.hold = max((len(s) for s in job.stop), default=1) - 1  # a stop string may be forming

    def add(self, token: int, eos: int | None, index: int) -> None:
        if token == eos and not self.job.ignore_eos:
            self.done, self.finish = True, "stop"
        else:
            self.ids.append(token)
            with self.lock:
                self.text = self.tok.decode(self.ids, skip_special_tokens=True)
            cut = min((i for i in (self.text.find(s) for s in self.job.stop) if i >= 0), default=-1)
            if cut >= 0:
                self.text, self.done, self.finish = self.text[:cut], True, "stop"
            elif len(self.ids) >= self.job.max_tokens:
                self.done = True
        if self.job.cancelled:
            self.done = True
        # send what cannot change any more: not a half-decoded character, not a stop string forming
        end = len(self.text) if self.done else len(self.text) - self.hold
        while end > self.sent and self.text[end - 1] == "\ufffd" and not self.done:
            end -= 1
        if end > self.sent:
            self.job.emit(("token", self.text[self.sent:end]))
            self.sent = end
        if self.done:
            self.job.emit(("done", {"text": self.text, "finish_reason": self.finish,
                                    "prompt_tokens": len(self.job.ids), "completion_tokens": len(self.ids),
                                    "receipt": self.receipt.row(index)}))


@torch.inference_mode()
def run_batch(model, jobs: list[Job], tokenizer_lock=None) -> None:
    """Generate every job as one left-padded batch (KV cache), each row with its own steering and sampling."""
    tok = model.tokenizer
    dec = Decoder(model, [j.ids for j in jobs], max(j.max_tokens for j in jobs))
    receipt = Receipt(rows=len(jobs))
    rows = [_Row(j, tok, tokenizer_lock or contextlib.nullcontext(), receipt) for j in jobs]
    eos = tok.eos_token_id
    with steer_terms(model, row_terms([j.steer for j in jobs]), receipt):
        for _ in range(max(j.max_tokens for j in jobs)):
            logits = dec.logits()
            nxt = logits.argmax(-1)
            for i, r in enumerate(rows):
                if not r.done and r.job.temperature > 0:  # each row samples with its own settings and seed
                    nxt[i] = _sample(logits[i:i + 1], True, r.job.temperature, r.job.top_k, r.job.top_p, r.gen)[0]
            for i, r in enumerate(rows):
                if r.done:
                    nxt[i] = pad_id(model)
                else:
                    r.add(int(nxt[i]), eos, i)
            if all(r.done for r in rows):
                break
            dec.advance(nxt)


class Batcher:
    """The worker thread: ``submit(jobs)`` queues rows; they run in batches of up to ``max_batch`` rows,
    gathered until no new row has come for ``window_s`` seconds (at most ``5 * window_s`` after the first)."""

    def __init__(self, model, max_batch: int = 16, window_s: float = 0.05, max_queue: int = 256):
        self.model, self.max_batch, self.window_s, self.max_queue = model, max_batch, window_s, max_queue
        self._queue: queue.Queue[Job] = queue.Queue()
        self._stop = threading.Event()
        # a Hugging Face fast tokenizer used from two threads at once can raise "Already borrowed"
        self.tokenizer_lock = threading.Lock()
        self.batches: list[int] = []  # sizes of the batches run (for tests and the benchmark)
        self.tokens = 0  # new tokens generated, over all rows
        self._thread = threading.Thread(target=self._loop, name="sas-serve-batcher", daemon=True)
        self._thread.start()

    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, jobs: list[Job]) -> None:
        for j in jobs:  # the rows of one request go in together, so they usually share a batch
            self._queue.put(j)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _gather(self) -> list[Job]:
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        # wait until no request has come for window_s (clients rarely arrive together: one may still be
        # sending), but at most 5 windows in all
        jobs, cap = [first], time.monotonic() + 5 * self.window_s
        while len(jobs) < self.max_batch:
            left = min(self.window_s, cap - time.monotonic())
            try:
                jobs.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return [j for j in jobs if not j.cancelled]

    def _loop(self) -> None:
        while not self._stop.is_set():
            jobs = self._gather()
            if not jobs:
                continue
            self.batches.append(len(jobs))
            self._run(jobs)

    def _run(self, jobs: list[Job]) -> None:
        """Run one batch; if it fails, run each row that has sent nothing yet alone, so one bad row (a seed or
        a strength the batch cannot take) fails only itself."""
        sent: dict[int, str] = {}  # id(job) -> the kind of the last event it sent

        def tap(job: Job) -> None:
            emit = job.emit

            def tapped(event):
                sent[id(job)] = event[0]
                if event[0] == "done":
                    self.tokens += event[1]["completion_tokens"]
                emit(event)
            job.emit = tapped

        for j in jobs:
            tap(j)
        try:
            run_batch(self.model, jobs, self.tokenizer_lock)
        except Exception as e:
            for j in jobs:
                if sent.get(id(j)) == "done" or j.cancelled:
                    continue
                if len(jobs) > 1 and id(j) not in sent:
                    self._run([j])
                else:
                    j.emit(("error", e))
