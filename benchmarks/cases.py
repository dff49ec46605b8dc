"""The benchmarks of issue 2 (Speed): each ``sas`` path against a naive or Hugging Face baseline.

Every ``setup`` returns zero-argument candidates over the same inputs; the harness times them
interleaved. ``cfg`` holds the sizes (quick mode shrinks them to prove the harness works).
"""

from __future__ import annotations

import json
import time
import warnings

import torch

from sas.generation import encode, pad_id, pad_left
from sas.prompts import ab_tokens

from .harness import Bench, Comparison, Context

# Sizes. The naive baselines build full-vocabulary logits for every token (about 3 s per
# 160-token sequence on one shared core), so the full mode times fewer pairs and questions than
# issue 2 names (64 pairs; 50 questions): both sides scale linearly in them, and the ratio does not
# depend on the count. The multipliers stay at 5, since sas shares the question prefix across them.
# "vector_pairs" builds the CAA vector that scoring and generation steer with.
FULL = {"n_pairs": 16, "layers": [4, 8], "n_test": 10, "multipliers": [-2.0, -1.0, 0.0, 1.0, 2.0], "ab_layer": 8,
        "new_tokens": 64, "gen_multiplier": 2.0, "gen_layer": 8, "vector_pairs": 64}
QUICK = {"n_pairs": 4, "layers": [4, 8], "n_test": 3, "multipliers": [-1.0, 1.0], "ab_layer": 8,
         "new_tokens": 8, "gen_multiplier": 2.0, "gen_layer": 8, "vector_pairs": 8}
# peak memory is set by one batch: a few full batches, one multiplier, a few new tokens
MEMORY = {**FULL, "n_pairs": 4, "n_test": 8, "multipliers": [2.0], "new_tokens": 8}


# ---- 1. CAA extraction ----

@torch.inference_mode()
def naive_answer_activations(model, pairs, layers, batch_size: int = 4):
    """The naive way: every full prompt + answer letter through the whole model, logits and all,
    ``run_with_cache`` for the residuals at the letter. Returns ``(matching, not_matching)`` as sas does."""
    t = ab_tokens(model, pairs)
    seqs = [pre + t.suffix + [t.letters[letter]] for p, pre in zip(pairs, t.prefix)
            for letter in (p.matching, p.not_matching)]
    names = [f"blocks.{x}.hook_resid_post" for x in layers]
    acts = {x: [] for x in layers}
    for i in range(0, len(seqs), batch_size):
        tokens, mask, _ = pad_left(seqs[i:i + batch_size], pad_id(model))
        _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=names)
        for x, n in zip(layers, names):
            acts[x].append(cache[n][:, -1].float())
    acts = {x: torch.cat(v) for x, v in acts.items()}
    return {x: a[0::2] for x, a in acts.items()}, {x: a[1::2] for x, a in acts.items()}


def _setup_extraction(ctx: Context, cfg: dict):
    from sas import load_behavior
    from sas.caa import answer_activations

    model, pairs, layers = ctx.model, load_behavior("sycophancy")[:cfg["n_pairs"]], cfg["layers"]
    return {"sas answer_activations": lambda: answer_activations(model, pairs, layers, progress=False),
            "naive run_with_cache": lambda: naive_answer_activations(model, pairs, layers)}


def _check_extraction(out: dict) -> dict:
    (sp, sn), (np_, nn) = out["sas answer_activations"], out["naive run_with_cache"]
    rel = max(((s - n).norm(dim=-1) / n.norm(dim=-1)).max().item() for a, b in ((sp, np_), (sn, nn))
              for s, n in ((a[x], b[x]) for x in a))
    diff = {x: ((sp[x] - sn[x]).mean(0), (np_[x] - nn[x]).mean(0)) for x in sp}
    cos = min(torch.nn.functional.cosine_similarity(a, b, dim=0).item() for a, b in diff.values())
    return {"max_relative_activation_difference": rel, "min_cosine_caa_vector": cos,
            "ok": rel < 1e-3 and cos > 0.9999}


# ---- 2. A/B scoring ----

@torch.inference_mode()
def naive_ab_scores(model, pairs, vector, layer: int, multipliers, batch_size: int = 4) -> list[float]:
    """The naive way: the full prompt through ``model(tokens)`` (all logits), a plain hook that adds
    the vector at the answer scaffold, letter logits read at the last position. Returns mean p_match
    per multiplier."""
    t = ab_tokens(model, pairs)
    ids = torch.tensor([t.letters["A"], t.letters["B"]])
    k = len(t.suffix)
    d = vector.directions[layer]
    out = []
    for m in multipliers:
        def add(resid, hook):  # left-padded: the scaffold is the last k positions of every row
            resid[:, -k:] += m * d
            return resid

        p = []
        with model.hooks(fwd_hooks=[(vector.hook_name(layer), add)]):
            for i in range(0, len(pairs), batch_size):
                tokens, mask, _ = pad_left([pre + t.suffix for pre in t.prefix[i:i + batch_size]], pad_id(model))
                logits = model(tokens, attention_mask=mask)
                lp = torch.log_softmax(logits[:, -1].float(), -1)[:, ids]
                for j, pair in enumerate(pairs[i:i + batch_size]):
                    a, b = (lp[j, 0], lp[j, 1]) if pair.matching == "A" else (lp[j, 1], lp[j, 0])
                    p.append(torch.sigmoid(a - b).item())
        out.append(sum(p) / len(p))
    return out


def _setup_ab(ctx: Context, cfg: dict):
    from sas import load_behavior
    from sas.evaluate import ABScorer

    model, vec = ctx.model, ctx.vector(tuple(cfg["layers"]), cfg["vector_pairs"])
    test, layer, mults = load_behavior("sycophancy", "test")[:cfg["n_test"]], cfg["ab_layer"], cfg["multipliers"]

    def sas_scores():
        scorer = ABScorer(model, test)  # built inside the timing: the shared prefix pass is part of the cost
        return [scorer.score(vec, m, [layer])["p_match"] for m in mults]

    return {"sas ABScorer": sas_scores, "naive model(tokens)": lambda: naive_ab_scores(model, test, vec, layer, mults)}


def _check_ab(out: dict) -> dict:
    a, b = out["sas ABScorer"], out["naive model(tokens)"]
    diff = max(abs(x - y) for x, y in zip(a, b))
    return {"p_match_sas": a, "p_match_naive": b, "max_abs_difference": diff, "ok": diff < 1e-4}


# ---- 3. Generation ----

def _setup_generation(batch: int):
    def setup(ctx: Context, cfg: dict):
        from sas import generate, steer
        from sas.datasets import load_neutral_prompts

        model, (hf, tok) = ctx.model, ctx.hf
        vec, n = ctx.vector(tuple(cfg["layers"]), cfg["vector_pairs"]), cfg["new_tokens"]
        prompts = load_neutral_prompts()[:batch]
        tokens, mask, _ = pad_left(encode(model, prompts), pad_id(model))  # the same ids for HF and sas

        def sas_steered():
            with steer(model, vec, cfg["gen_multiplier"], [cfg["gen_layer"]]):
                return generate(model, prompts, n, batch_size=batch, stop_at_eos=False)

        @torch.inference_mode()
        def hf_generate():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = hf.generate(input_ids=tokens, attention_mask=mask, do_sample=False, max_new_tokens=n,
                                  min_new_tokens=n, pad_token_id=pad_id(model), top_p=None, top_k=None)
            return tok.batch_decode(out[:, tokens.shape[1]:], skip_special_tokens=True)

        return {"HF generate (unsteered)": hf_generate,
                "sas generate (unsteered)": lambda: generate(model, prompts, n, batch_size=batch, stop_at_eos=False),
                "sas generate (steered)": sas_steered}

    return setup


def _check_generation(out: dict) -> dict:
    hf, sas_u, sas_s = out["HF generate (unsteered)"], out["sas generate (unsteered)"], out["sas generate (steered)"]
    return {"unsteered_sas_equals_hf_rows": sum(a == b for a, b in zip(hf, sas_u)), "rows": len(hf),
            "steered_differs_rows": sum(a != b for a, b in zip(sas_u, sas_s)),
            "example_unsteered": sas_u[0][:120], "example_steered": sas_s[0][:120]}


def _generation_bench(batch: int) -> Bench:
    return Bench(
        f"generation_batch{batch}", _setup_generation(batch),
        [Comparison("sas generate (steered)", "HF generate (unsteered)", 0.8, "steered sas vs HF's own generate"),
         Comparison("sas generate (unsteered)", "HF generate (unsteered)", None, "unsteered sas vs HF"),
         Comparison("sas generate (steered)", "sas generate (unsteered)", 0.97, "steering overhead < 3%")],
        _check_generation, repeats=3, warmup=True,
        describe=lambda cfg: f"greedy, {cfg['new_tokens']} new tokens (min_new_tokens forces equal length), "
                             f"batch {batch}, neutral prompts; CAA vector x{cfg['gen_multiplier']} at layer "
                             f"{cfg['gen_layer']}, after_prompt")


BENCHES = {
    "extraction": Bench(
        "extraction", _setup_extraction,
        [Comparison("sas answer_activations", "naive run_with_cache", 5.0, "extraction throughput >= 5x")],
        _check_extraction, repeats=3,
        describe=lambda cfg: f"{cfg['n_pairs']} sycophancy pairs (generate split), layers {cfg['layers']}, batch 16 pairs (sas) / "
                             "4 sequences (naive, full model with logits: 16 sequences, 2.9 GB of logits, "
                             "were killed by the OOM killer on this shared machine)"),
    "ab_scoring": Bench(
        "ab_scoring", _setup_ab,
        [Comparison("sas ABScorer", "naive model(tokens)", None, "report the ratio")],
        _check_ab, repeats=3,
        describe=lambda cfg: f"{cfg['n_test']} sycophancy test questions x {len(cfg['multipliers'])} multipliers, "
                             f"CAA vector at layer {cfg['ab_layer']}; batch 25 (sas) / 4 (naive, full logits)"),
    "generation_batch1": _generation_bench(1),
    "generation_batch8": _generation_bench(8),
}


# ---- 4. The full A/B sweep (wall time, no baseline) ----

def run_sweep(ctx: Context, quick: bool, out_dir) -> dict:
    """Wall time of ``sas.sweep.ab_sweep``, with the time spent building CAA vectors and scoring apart.

    Full: all 7 behaviours x layers 2..16 step 2 x multipliers -2..2, every test question.
    Quick: sycophancy x 2 layers x 2 multipliers, 5 test questions, vectors from 16 pairs.
    """
    import sas.sweep as sw

    if quick:
        behaviors, layers, mults, n_test, n_pairs = ["sycophancy"], [2, 4], [-1.0, 1.0], 5, 16
    else:
        behaviors, layers, mults, n_test, n_pairs = "all", list(range(2, 17, 2)), [-2.0, -1.0, 0.0, 1.0, 2.0], None, None
    out = out_dir / f"sweep_{'quick' if quick else 'full'}.jsonl"
    out.unlink(missing_ok=True)
    for p in out.with_suffix(".vectors").glob("*") if out.with_suffix(".vectors").exists() else []:
        p.unlink()
    spent = []
    real_caa, real_load = sw.caa_vector, sw.load_behavior

    progress = out.with_suffix(".progress.jsonl")  # per-behaviour marks: a cut-short sweep still tells
    progress.unlink(missing_ok=True)

    def mark(**row):
        with open(progress, "a") as f:
            f.write(json.dumps({**row, "wall": time.perf_counter(), "cpu": time.process_time()}) + "\n")

    def timed_caa(*a, **k):
        mark(event="caa_start", behavior=a[3] if len(a) > 3 else k.get("behavior"))
        t0 = time.perf_counter()
        v = real_caa(*a, **k)
        spent.append(time.perf_counter() - t0)
        mark(event="caa_end", n_pairs=v.settings["n_pairs"])
        return v

    def load(b, split="generate"):
        rows = real_load(b, split)
        return rows[:n_pairs] if split == "generate" and n_pairs else rows

    model = ctx.model
    sw.caa_vector, sw.load_behavior = timed_caa, load
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        df = sw.ab_sweep(model, behaviors, layers, mults, out=out, n_test=n_test, progress=False)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        mark(event="end")
    finally:
        sw.caa_vector, sw.load_behavior = real_caa, real_load
    scoring = float(df["seconds"].sum())
    return {"behaviors": sorted(set(df["behavior"])), "layers": layers, "multipliers": mults,
            "n_test": n_test or "all (50)", "n_rows": len(df), "total_seconds": total,
            "cpu_seconds": cpu,  # this process's CPU time: what the wall time would be on an idle core
            "extraction_seconds": sum(spent), "scoring_seconds": scoring,
            "other_seconds": total - sum(spent) - scoring, "goal_seconds": 900,
            "goal_met": total <= 900 if not quick else None}
