"""One timed job of a peer library (steering-vectors, repeng) or of plain Hugging Face, in a child process.

    python benchmarks/peers.py JOB.json       # prints one JSON line: seconds, cpu_seconds, memory, value

Runs in the peer's own environment, so it imports only torch, transformers, numpy and the peer (never
``sas``). The job names the Hugging Face folder that ``sas`` converted (the same fp32 weights in every
environment), the work and its inputs. The child loads the model, runs the work once untimed and small
(a warm-up), then once timed; only that second run is reported, so interpreter start-up and model loading
stay out of the ratio. With ``memory`` set, the kernel's high-water mark is reset before the timed run and
its peak resident set size is reported, as ``harness.measure_memory_here`` does for sas's candidates.

Jobs (``task``):

- ``extract``: steering vectors for ``layers`` from ``samples`` (positive, negative) strings.
  ``steering-vectors``: ``train_steering_vector`` with its mean-difference aggregator, reading the last token
  (``variant="causal_lm"`` gives it the model as its README does; ``"no_lm_head"`` gives it the decoder
  without the 262k-vocabulary unembedding, its fastest use). ``repeng``: ``ControlVector.train``, its
  default ``pca_diff`` method. The vectors go to ``out`` (``torch.save``).
- ``generate``: greedy ``generate`` of ``new_tokens`` tokens from the given token ids, steered by adding
  ``multiplier * vector`` to the output of decoder layer ``layer`` at every position (``steering-vectors``:
  ``SteeringVector.apply``; ``repeng``: ``ControlModel.set_control``; ``hf``: unsteered). Returns the new ids.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings


def _status_kb(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _extract(job, hf, tok, samples):
    import torch

    layers, bs = job["layers"], job["batch_size"]
    if job["peer"] == "steering-vectors":
        import steering_vectors as sv

        model = hf.model if job.get("variant") == "no_lm_head" else hf
        vec = sv.train_steering_vector(model, tok, samples, layers=layers, batch_size=bs, read_token_index=-1,
                                       aggregator=sv.mean_aggregator())
        return {int(k): v.float() for k, v in vec.layer_activations.items()}
    if job["peer"] == "repeng":
        from repeng import ControlVector, DatasetEntry

        data = [DatasetEntry(positive=p, negative=n) for p, n in samples]
        vec = ControlVector.train(hf, tok, data, hidden_layers=layers, batch_size=bs, method="pca_diff")
        return {int(k): torch.from_numpy(v) for k, v in vec.directions.items()}
    raise ValueError(f"unknown peer {job['peer']!r} for extract")


def _steered(job, hf):
    """A context manager that steers ``hf`` as the peer does (or does nothing for ``hf``)."""
    import contextlib

    import torch

    layer, mult = job["layer"], job["multiplier"]
    direction = torch.tensor(job["vector"], dtype=torch.float32)
    if job["peer"] == "steering-vectors":
        import steering_vectors as sv

        return sv.SteeringVector({layer: direction}, "decoder_block").apply(hf, multiplier=mult, min_token_index=0)
    if job["peer"] == "repeng":
        import numpy as np
        from repeng import ControlModel, ControlVector

        @contextlib.contextmanager
        def ctl():
            cm = ControlModel(hf, [layer])  # wraps the decoder layer in place; unwrap() restores it
            try:
                cm.set_control(ControlVector(hf.config.model_type, {layer: direction.numpy().astype(np.float32)}), mult)
                yield
            finally:
                cm.unwrap()

        return ctl()
    if job["peer"] == "hf":
        return contextlib.nullcontext()
    raise ValueError(f"unknown peer {job['peer']!r} for generate")


def _generate(job, hf, tokens, mask, new_tokens):
    import torch

    with torch.inference_mode(), _steered(job, hf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hf.generate(input_ids=tokens, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, pad_token_id=job["pad_id"], top_p=None, top_k=None)
    return out[:, tokens.shape[1]:].tolist()


def main(path: str) -> int:
    job = json.loads(open(path).read())
    import torch

    torch.set_num_threads(job.get("threads", 1))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(job["model_dir"])
    hf = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32).eval()
    if job["task"] == "extract":
        samples = [tuple(s) for s in job["samples"]]
        work = lambda: _extract(job, hf, tok, samples)  # noqa: E731
        warm = lambda: _extract({**job, "layers": job["layers"][:1]}, hf, tok, samples[:2])  # noqa: E731
    elif job["task"] == "generate":
        tokens, mask = torch.tensor(job["input_ids"]), torch.tensor(job["attention_mask"])
        work = lambda: _generate(job, hf, tokens, mask, job["new_tokens"])  # noqa: E731
        warm = lambda: _generate(job, hf, tokens, mask, 2)  # noqa: E731
    else:
        raise ValueError(f"unknown task {job['task']!r}")
    warm()
    import gc

    gc.collect()
    if job.get("memory"):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    before = _status_kb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    value = work()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _status_kb("VmHWM")
    memory = ({"rss_before_mb": before / 1024, "peak_rss_mb": peak / 1024, "peak_increase_mb": (peak - before) / 1024}
              if job.get("memory") else {})
    if job.get("out"):
        torch.save(value, job["out"])
        value = job["out"]
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "memory": memory, "value": value}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main(sys.argv[1]))
