"""The speed benchmarks: each ``sas`` path against a naive or Hugging Face baseline,
and against the peer libraries steering-vectors and repeng (run in their own environments).

Every ``setup`` returns zero-argument candidates over the same inputs; the harness times them
interleaved. ``cfg`` holds the sizes (quick mode shrinks them to prove the harness works).
"""

from __future__ import annotations

import json
import time
import warnings

import torch

from sas.forward.run import encode, pad_id, pad_left
from sas.load.prompts import ab_tokens

from .harness import Bench, Comparison, Context, Peer

# Sizes. The naive baselines build full-vocabulary logits for every token (about 3 s per
# 160-token sequence on one shared core), so the full mode times fewer pairs and questions than
# the goals name (64 pairs; 50 questions): both sides scale linearly in them, and the ratio does not
# depend on the count. The multipliers stay at 5, since sas shares the question prefix across them.
# "vector_pairs" builds the CAA vector that scoring and generation steer with.
FULL = {"n_pairs": 16, "layers": [4, 8], "n_test": 10, "multipliers": [-2.0, -1.0, 0.0, 1.0, 2.0], "ab_layer": 8,
        "new_tokens": 64, "gen_multiplier": 2.0, "gen_layer": 8, "vector_pairs": 64,
        # the peers: all 18 layers; the 50 test questions; the 16k SAE at layer 9 for sparse steering
        "peer_pairs": 32, "peer_layers": list(range(18)), "peer_batch": 8, "hf_test": 50,
        "sae": "gemma-3-270m-L9-16k", "sparse_multiplier": 2.0, "forward_prompts": 16,
        "bf16_pairs": 64, "bf16_gen_batch": 8, "feature_tokens": 8_000, "nll_texts": 128}
QUICK = {"n_pairs": 4, "layers": [4, 8], "n_test": 3, "multipliers": [-1.0, 1.0], "ab_layer": 8,
         "new_tokens": 8, "gen_multiplier": 2.0, "gen_layer": 8, "vector_pairs": 8,
         "peer_pairs": 4, "peer_layers": [4, 8], "peer_batch": 4, "hf_test": 3,
         "sae": "gemma-3-270m-L9-16k", "sparse_multiplier": 2.0, "forward_prompts": 2,
         "bf16_pairs": 4, "bf16_gen_batch": 2, "train_rows": 4, "feature_tokens": 1_000, "nll_texts": 4}
# peak memory is set by one batch: a few full batches, one multiplier, a few new tokens
MEMORY = {**FULL, "n_pairs": 4, "n_test": 8, "multipliers": [2.0], "new_tokens": 8, "peer_pairs": 8, "hf_test": 8}


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
    from sas.activations.residual import answer_activations

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
    from sas.evaluation.ab import ABScorer

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
        from dataclasses import replace

        from sas import generate, steer
        from sas.load.data import load_neutral_prompts

        model, (hf, tok) = ctx.model, ctx.hf
        vec, n = ctx.vector(tuple(cfg["layers"]), cfg["vector_pairs"]), cfg["new_tokens"]
        layer, mult = cfg["gen_layer"], cfg["gen_multiplier"]
        fast = ctx.sparse_vector(cfg["sae"])
        full = replace(fast, fast=False)  # the same vector through the full encode/decode path
        prompts = load_neutral_prompts()[:batch]
        tokens, mask, _ = pad_left(encode(model, prompts), pad_id(model))  # the same ids for HF, peers and sas

        def sas_steered(v, m):
            def run():  # every position, as the peers steer: the same work, and the same text to check
                with steer(model, v, m, positions="all"):
                    return generate(model, prompts, n, batch_size=batch, stop_at_eos=False)
            return run

        @torch.inference_mode()
        def hf_generate():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = hf.generate(input_ids=tokens, attention_mask=mask, do_sample=False, max_new_tokens=n,
                                  min_new_tokens=n, pad_token_id=pad_id(model), top_p=None, top_k=None)
            return tok.batch_decode(out[:, tokens.shape[1]:], skip_special_tokens=True)

        job = {"task": "generate", "input_ids": tokens.tolist(), "attention_mask": mask.tolist(), "new_tokens": n,
               "pad_id": pad_id(model), "layer": layer, "multiplier": mult, "vector": vec.directions[layer].tolist()}
        decode = lambda ids: tok.batch_decode(ids, skip_special_tokens=True)  # noqa: E731
        return {"HF generate (unsteered)": hf_generate,
                "sas generate (unsteered)": lambda: generate(model, prompts, n, batch_size=batch, stop_at_eos=False),
                "sas dense (steered)": lambda: _steer_layer(model, vec, mult, layer, prompts, n, batch),
                "sas sparse fast (steered)": sas_steered(fast, cfg["sparse_multiplier"]),
                "sas sparse full (steered)": sas_steered(full, cfg["sparse_multiplier"]),
                "steering-vectors (steered)": Peer("steering-vectors", job, decode),
                "repeng (steered)": Peer("repeng", job, decode)}

    return setup


def _steer_layer(model, vec, mult, layer, prompts, n, batch):
    from sas import generate, steer

    with steer(model, vec, mult, [layer], positions="all"):
        return generate(model, prompts, n, batch_size=batch, stop_at_eos=False)


def _check_generation(out: dict) -> dict:
    hf, sas_u, dense = out["HF generate (unsteered)"], out["sas generate (unsteered)"], out["sas dense (steered)"]
    fast, full = out["sas sparse fast (steered)"], out["sas sparse full (steered)"]
    sv, rp = out["steering-vectors (steered)"], out["repeng (steered)"]
    same = lambda a, b: sum(x == y for x, y in zip(a, b))  # noqa: E731
    return {"rows": len(hf), "unsteered_sas_equals_hf_rows": same(hf, sas_u),
            "dense_sas_equals_steering_vectors_rows": same(dense, sv), "dense_sas_equals_repeng_rows": same(dense, rp),
            "sparse_fast_equals_full_rows": same(fast, full), "dense_differs_from_unsteered_rows": len(hf) - same(dense, sas_u),
            "sparse_differs_from_unsteered_rows": len(hf) - same(fast, sas_u),
            "example_unsteered": sas_u[0][:100], "example_dense": dense[0][:100], "example_steering_vectors": sv[0][:100],
            "example_sparse": fast[0][:100]}


def _generation_bench(batch: int) -> Bench:
    return Bench(
        f"generation_batch{batch}", _setup_generation(batch),
        [Comparison("sas dense (steered)", "steering-vectors (steered)", 1.0, "as fast as steering-vectors"),
         Comparison("sas dense (steered)", "repeng (steered)", 1.0, "as fast as repeng"),
         Comparison("sas dense (steered)", "HF generate (unsteered)", 1.0, "steered sas vs HF's own unsteered generate"),
         Comparison("sas sparse fast (steered)", "steering-vectors (steered)", None, "sparse vs a dense peer"),
         Comparison("sas sparse fast (steered)", "repeng (steered)", None, "sparse vs a dense peer"),
         Comparison("sas generate (unsteered)", "HF generate (unsteered)", None, "unsteered sas vs HF"),
         Comparison("sas dense (steered)", "sas generate (unsteered)", 1 / 1.03, "dense steering overhead < 3%"),
         Comparison("sas sparse fast (steered)", "sas generate (unsteered)", 1 / 1.10, "sparse fast-path overhead < 10%"),
         Comparison("sas sparse full (steered)", "sas generate (unsteered)", None, "sparse full path, for reference"),
         Comparison("sas sparse fast (steered)", "sas sparse full (steered)", None, "fast path vs full path")],
        _check_generation, repeats=3, warmup=True,
        describe=lambda cfg: f"greedy, {cfg['new_tokens']} new tokens (min_new_tokens forces equal length), "
                             f"batch {batch}, neutral prompts, every position steered (as the peers do); dense: "
                             f"CAA sycophancy vector ({cfg['vector_pairs']} pairs) x{cfg['gen_multiplier']} at "
                             f"layer {cfg['gen_layer']}; sparse: SAS sycophancy vector in {cfg['sae']} "
                             f"x{cfg['sparse_multiplier']}; peers in their own environments (child process, "
                             "time of the work only, after a warm-up)")


# ---- 5. Peers: extraction (all layers) and A/B scoring against a plain Hugging Face loop ----

def _setup_extraction_peers(ctx: Context, cfg: dict):
    from sas import caa_vector, load_behavior
    from sas.load.data import balance_letters
    from sas.load.prompts import BASE_SUFFIX

    model, layers = ctx.model, cfg["peer_layers"]
    used = balance_letters(load_behavior("sycophancy")[:cfg["peer_pairs"]])
    # the same strings the peers tokenize: sas's prompt with the answer letter last (the token sas reads)
    samples = [(p.question + BASE_SUFFIX + p.matching, p.question + BASE_SUFFIX + p.not_matching) for p in used]
    job = {"task": "extract", "samples": samples, "layers": layers, "batch_size": cfg["peer_batch"]}
    return {"sas caa_vector": lambda: caa_vector(model, used, layers, "sycophancy", balance=False, progress=False),
            "steering-vectors (mean)": Peer("steering-vectors", {**job, "variant": "causal_lm"}),
            "steering-vectors (mean, no LM head)": Peer("steering-vectors", {**job, "variant": "no_lm_head"}),
            "repeng (pca_diff)": Peer("repeng", job)}


def _check_extraction_peers(out: dict) -> dict:
    cos = torch.nn.functional.cosine_similarity
    v = out["sas caa_vector"].directions
    res = {}
    for name in ("steering-vectors (mean)", "steering-vectors (mean, no LM head)"):
        w = out[name]
        res[name] = {"min_cosine": min(cos(v[x], w[x], dim=0).item() for x in v),
                     "max_norm_difference": max(abs(v[x].norm().item() / w[x].norm().item() - 1) for x in v)}
    r = out["repeng (pca_diff)"]  # a unit PCA direction, not a mean difference: how close, not equal
    res["repeng (pca_diff)"] = {"min_abs_cosine_to_sas": min(abs(cos(v[x], r[x], dim=0).item()) for x in v),
                                "median_abs_cosine_to_sas": sorted(abs(cos(v[x], r[x], dim=0).item()) for x in v)[len(v) // 2]}
    res["ok"] = all(res[n]["min_cosine"] >= 0.999 and res[n]["max_norm_difference"] <= 0.005
                    for n in ("steering-vectors (mean)", "steering-vectors (mean, no LM head)"))
    return res


@torch.inference_mode()
def hf_ab_scores(hf, tok, pairs, direction, layer: int, multipliers, batch_size: int = 8) -> list[float]:
    """A plain Hugging Face loop: the prompt through ``hf(...)``, a forward hook on decoder layer ``layer``
    that adds the vector at the answer scaffold, only the last position's logits (``logits_to_keep=1``).
    Returns mean p_match per multiplier."""
    from sas.load.prompts import BASE_SUFFIX

    a_id, b_id = (tok(x, add_special_tokens=False).input_ids[0] for x in ("A", "B"))
    k = len(tok(BASE_SUFFIX, add_special_tokens=False).input_ids)
    tok.padding_side = "left"
    out = []
    for m in multipliers:
        def add(module, args, output):  # left-padded: the scaffold is the last k positions of every row
            h = output[0] if isinstance(output, tuple) else output
            h[:, -k:] += m * direction
            return output

        handle = hf.model.layers[layer].register_forward_hook(add)
        p = []
        try:
            for i in range(0, len(pairs), batch_size):
                batch = pairs[i:i + batch_size]
                enc = tok([q.question + BASE_SUFFIX for q in batch], return_tensors="pt", padding=True)
                lp = torch.log_softmax(hf(**enc, logits_to_keep=1).logits[:, -1].float(), -1)
                for j, pair in enumerate(batch):
                    a, b = lp[j, a_id], lp[j, b_id]
                    p.append(torch.sigmoid(a - b if pair.matching == "A" else b - a).item())
        finally:
            handle.remove()
        out.append(sum(p) / len(p))
    return out


def _setup_ab_hf(ctx: Context, cfg: dict):
    from sas import load_behavior
    from sas.evaluation.ab import ABScorer

    model, (hf, tok), vec = ctx.model, ctx.hf, ctx.vector(tuple(cfg["layers"]), cfg["vector_pairs"])
    test, layer, mults = load_behavior("sycophancy", "test")[:cfg["hf_test"]], cfg["ab_layer"], cfg["multipliers"]

    def sas_scores():
        scorer = ABScorer(model, test)  # built inside the timing: the shared prefix pass is part of the cost
        return [scorer.score(vec, m, [layer])["p_match"] for m in mults]

    return {"sas ABScorer": sas_scores,
            "HF loop with a hook": lambda: hf_ab_scores(hf, tok, test, vec.directions[layer], layer, mults)}


def _check_ab_hf(out: dict) -> dict:
    a, b = out["sas ABScorer"], out["HF loop with a hook"]
    diff = max(abs(x - y) for x, y in zip(a, b))
    return {"p_match_sas": a, "p_match_hf": b, "max_abs_difference": diff, "ok": diff < 1e-3}


# ---- 6. Sparse steering on one forward pass: fast path, full path, unsteered ----

def _edit_vectors(ctx: Context, cfg: dict) -> dict:
    """The feature-selection methods' sparse edits in ``cfg["sae"]``: the sentiment-negative vector of ``sas_diff`` (shared features kept,
    hundreds of features: the heavy case) added, and the same features clamped (fast and full paths)."""
    from dataclasses import replace

    from sas import load_sae
    from sas.activations.contrast import Contrast
    from sas.activations.feature_stats import feature_stats
    from sas.concepts import get_concept
    from sas.load.saes import sae_layer
    from sas.methods.registry import build_vector

    if getattr(ctx, "_edits", None) is None:
        sae = load_sae(cfg["sae"], ctx.model)
        layer = sae_layer(sae)
        c = get_concept("sentiment-negative")
        con = Contrast(c.name, positive=c.positive_texts(), negative=c.negative_texts())
        add = build_vector(ctx.model, "sas_diff", con, [layer], {layer: sae})
        typ = feature_stats(ctx.model, sae).typical()
        typ = torch.where(typ > 0, typ, typ[typ > 0].median())  # never active on the sample: a median target
        clamp = replace(add, edit="clamp", typical={layer: typ * (add.codes[layer] != 0)})
        ctx._edits = {"add": add, "clamp": clamp, "clamp_full": replace(clamp, fast=False)}
    return ctx._edits


def _setup_sparse_edits(ctx: Context, cfg: dict):
    from sas import generate, steer
    from sas.load.data import load_neutral_prompts

    model, n, batch = ctx.model, cfg["new_tokens"], 8
    v = _edit_vectors(ctx, cfg)
    prompts = load_neutral_prompts()[:batch]

    def run(vec, m):
        def go():
            with steer(model, vec, m, positions="all"):
                return generate(model, prompts, n, batch_size=batch, stop_at_eos=False)
        return go

    return {"sas generate (unsteered)": lambda: generate(model, prompts, n, batch_size=batch, stop_at_eos=False),
            "sas_diff add, fast (steered)": run(v["add"], 4.0),
            "sas clamp, fast (steered)": run(v["clamp"], 1.0),
            "sas clamp, full (steered)": run(v["clamp_full"], 1.0)}


def _check_sparse_edits(out: dict) -> dict:
    same = lambda a, b: sum(x == y for x, y in zip(a, b))  # noqa: E731
    u, fast, full = out["sas generate (unsteered)"], out["sas clamp, fast (steered)"], out["sas clamp, full (steered)"]
    return {"rows": len(u), "clamp_fast_equals_full_rows": same(fast, full),
            "clamp_differs_from_unsteered_rows": len(u) - same(fast, u),
            "add_differs_from_unsteered_rows": len(u) - same(out["sas_diff add, fast (steered)"], u),
            "example_unsteered": u[0][:100], "example_add": out["sas_diff add, fast (steered)"][0][:100],
            "example_clamp": fast[0][:100]}

def _setup_sparse_forward(ctx: Context, cfg: dict):
    from dataclasses import replace

    from sas import load_behavior, steer
    from sas.forward.run import logits_at, run_resid
    from sas.load.prompts import ab_tokens

    model = ctx.model
    fast = ctx.sparse_vector(cfg["sae"])
    full = replace(fast, fast=False)
    dense = ctx.vector(tuple(cfg["layers"]), cfg["vector_pairs"])
    t = ab_tokens(model, load_behavior("sycophancy", "test")[:cfg["forward_prompts"]])
    tokens, mask, left_pad = pad_left([pre + t.suffix for pre in t.prefix], pad_id(model))

    @torch.inference_mode()
    def forward():  # a prefill: every block, logits at the last position only
        return logits_at(model, run_resid(model, tokens, mask, left_pad)[:, -1])

    def steered(v, m, layers=None):
        def run():
            with steer(model, v, m, layers, positions="all"):
                return forward()
        return run

    edits = _edit_vectors(ctx, cfg)
    return {"forward (unsteered)": forward,
            "forward, sas_diff add fast": steered(edits["add"], 4.0),
            "forward, sas clamp fast": steered(edits["clamp"], 1.0),
            "forward, sas clamp full": steered(edits["clamp_full"], 1.0),
            "forward, sas sparse fast": steered(fast, cfg["sparse_multiplier"]),
            "forward, sas sparse full": steered(full, cfg["sparse_multiplier"]),
            "forward, sas dense": steered(dense, cfg["gen_multiplier"], [cfg["gen_layer"]])}


def _check_sparse_forward(out: dict) -> dict:
    f, g = out["forward, sas sparse fast"], out["forward, sas sparse full"]
    u = out["forward (unsteered)"]
    cf, cg = out["forward, sas clamp fast"], out["forward, sas clamp full"]
    return {"max_abs_logit_difference_fast_vs_full": (f - g).abs().max().item(),
            "max_abs_logit_difference_clamp_fast_vs_full": (cf - cg).abs().max().item(),
            "max_abs_logit_change_by_clamp": (cf - u).abs().max().item(),
            "max_abs_logit_change_by_steering": (f - u).abs().max().item(),
            "ok": (f - g).abs().max().item() < 1e-2 * max(1.0, (f - u).abs().max().item())}


# ---- 5b. the benchmark's fluency pass: continuation likelihood under the unsteered model ----

@torch.inference_mode()
def per_row_nll(model, prompts, continuations, batch_size: int = 128):
    """sas's continuation NLL before the vocabulary was streamed: one body pass per batch, then per continuation
    its positions' full logits and a log_softmax (W_U read once per continuation)."""
    from sas.forward.run import logits_at, run_resid

    rows = []
    for i in range(0, len(prompts), batch_size):
        p_ids = encode(model, prompts[i:i + batch_size])
        c_ids = [model.tokenizer(c, add_special_tokens=False).input_ids for c in continuations[i:i + batch_size]]
        tokens, mask, left_pad = pad_left([p + c for p, c in zip(p_ids, c_ids)], pad_id(model))
        resid, n = run_resid(model, tokens, mask, left_pad), tokens.shape[1]
        for j, c in enumerate(c_ids):
            logp = torch.log_softmax(logits_at(model, resid[j, n - len(c) - 1:n - 1]).float(), -1)
            rows.append((-logp.gather(-1, tokens[j, n - len(c):, None]).sum().item(), len(c)))
    return torch.tensor(rows, dtype=torch.float64)


@torch.inference_mode()
def naive_nll(model, prompts, continuations, batch_size: int = 8):
    """The naive way: ``model(tokens)``, full logits at every position, log_softmax, gather."""
    rows = []
    for i in range(0, len(prompts), batch_size):
        p_ids = encode(model, prompts[i:i + batch_size])
        c_ids = [model.tokenizer(c, add_special_tokens=False).input_ids for c in continuations[i:i + batch_size]]
        tokens, mask, _ = pad_left([p + c for p, c in zip(p_ids, c_ids)], pad_id(model))
        logp = torch.log_softmax(model(tokens, attention_mask=mask).float(), -1)
        n = tokens.shape[1]
        for j, c in enumerate(c_ids):
            rows.append((-logp[j, n - len(c) - 1:n - 1].gather(-1, tokens[j, n - len(c):, None]).sum().item(), len(c)))
    return torch.tensor(rows, dtype=torch.float64)


def _setup_nll(ctx: Context, cfg: dict):
    from sas.forward.likelihood import continuation_nll
    from sas.load.data import load_text_sample

    model, tok = ctx.model, ctx.model.tokenizer
    prompts, conts = [], []
    for text in load_text_sample(cfg["nll_texts"]):  # a 12-token prompt and the 16 tokens after it, as in sas bench
        ids = tok(text, add_special_tokens=False).input_ids
        prompts.append(tok.decode(ids[:12]))
        conts.append(tok.decode(ids[12:28]))
    return {"sas continuation_nll": lambda: continuation_nll(model, prompts, conts, batch_size=128),
            "per-row log_softmax": lambda: per_row_nll(model, prompts, conts),
            "naive model(tokens)": lambda: naive_nll(model, prompts, conts)}


def _check_nll(out: dict) -> dict:
    s, r, n = out["sas continuation_nll"], out["per-row log_softmax"], out["naive model(tokens)"]
    rel = max(((s[:, 0] - b[:, 0]).abs() / b[:, 0].abs()).max().item() for b in (r, n))
    return {"max_relative_nll_difference": rel, "same_token_counts": bool((s[:, 1] == r[:, 1]).all()),
            "ok": rel < 1e-4 and bool((s[:, 1] == n[:, 1]).all())}


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
    "extraction_peers": Bench(
        "extraction_peers", _setup_extraction_peers,
        [Comparison("sas caa_vector", "steering-vectors (mean)", 2.0, "extraction >= 2x steering-vectors"),
         Comparison("sas caa_vector", "steering-vectors (mean, no LM head)", None,
                    "steering-vectors given the decoder without its unembedding: its fastest use"),
         Comparison("sas caa_vector", "repeng (pca_diff)", None, "repeng's default method")],
        _check_extraction_peers, repeats=3,
        describe=lambda cfg: f"time to vectors for all {len(cfg['peer_layers'])} layers from {cfg['peer_pairs']} "
                             "sycophancy pairs (generate split, letter-balanced), the same strings and the same "
                             f"token (the answer letter) for every library; peers at batch {cfg['peer_batch']} "
                             "in their own environments (child process, time of the work only, after a warm-up)"),
    "ab_scoring_hf": Bench(
        "ab_scoring_hf", _setup_ab_hf,
        [Comparison("sas ABScorer", "HF loop with a hook", None, "vs a plain Hugging Face loop")],
        _check_ab_hf, repeats=3,
        describe=lambda cfg: f"{cfg['hf_test']} sycophancy test questions x {len(cfg['multipliers'])} multipliers, "
                             f"CAA vector at layer {cfg['ab_layer']}; HF: batch 8, a forward hook adding the vector "
                             "at the answer scaffold, logits_to_keep=1"),
    "generation_batch1": _generation_bench(1),
    "generation_batch8": _generation_bench(8),
    "sparse_forward": Bench(
        "sparse_forward", _setup_sparse_forward,
        [Comparison("forward, sas sparse fast", "forward (unsteered)", 1 / 1.10, "fast path costs < 10%"),
         Comparison("forward, sas sparse full", "forward (unsteered)", None, "full path, beside it"),
         Comparison("forward, sas dense", "forward (unsteered)", 1 / 1.03, "dense steering costs < 3%"),
         Comparison("forward, sas_diff add fast", "forward (unsteered)", 1 / 1.10,
                    "sas_diff (hundreds of features) fast path < 10%"),
         Comparison("forward, sas clamp fast", "forward (unsteered)", 1 / 1.10, "clamp fast path < 10%"),
         Comparison("forward, sas clamp full", "forward (unsteered)", None, "clamp full path, beside it")],
        _check_sparse_forward, repeats=5, warmup=True,
        describe=lambda cfg: f"one forward pass over {cfg['forward_prompts']} sycophancy test prompts (left-padded "
                             f"batch), every block, logits at the last position; every position steered; SAS vector "
                             f"in {cfg['sae']} x{cfg['sparse_multiplier']}"),
    "continuation_nll": Bench(
        "continuation_nll", _setup_nll,
        [Comparison("sas continuation_nll", "per-row log_softmax", None, "the vocabulary streamed, against sas before"),
         Comparison("sas continuation_nll", "naive model(tokens)", None, "against full logits")],
        _check_nll, repeats=3, warmup=True,
        describe=lambda cfg: f"the summed NLL of {cfg['nll_texts']} 16-token continuations of 12-token held-out "
                             "Wikipedia prompts under the unsteered model, as sas bench's fluency pass (batch 128; "
                             "the naive loop batch 8: full logits are 1 MB per position)"),
    "sparse_edits": Bench(
        "sparse_edits", _setup_sparse_edits,
        [Comparison("sas_diff add, fast (steered)", "sas generate (unsteered)", 1 / 1.10,
                    "sas_diff add overhead < 10%"),
         Comparison("sas clamp, fast (steered)", "sas generate (unsteered)", 1 / 1.10, "clamp overhead < 10%"),
         Comparison("sas clamp, full (steered)", "sas generate (unsteered)", None, "clamp full path, for reference")],
        _check_sparse_edits, repeats=3, warmup=True,
        describe=lambda cfg: f"greedy, {cfg['new_tokens']} new tokens, batch 8 neutral prompts, every position "
                             f"steered; the sas_diff sentiment-negative vector in {cfg['sae']} (shared features "
                             "kept) added x4, and its features clamped to 1x their typical active value"),
}


# ---- 6. bfloat16 against float32: extraction, A/B scoring, generation, both models in one run ----

def _setup_bf16(ctx: Context, cfg: dict):
    from sas import caa_vector, generate, load_behavior, steer
    from sas.evaluation.ab import ABScorer
    from sas.load.data import load_neutral_prompts

    models = {"float32": ctx.model, "bfloat16": ctx.model_bf16}
    pairs, layers = load_behavior("sycophancy")[:cfg["bf16_pairs"]], cfg["layers"]
    test, layer, mults = load_behavior("sycophancy", "test")[:cfg["n_test"]], cfg["ab_layer"], cfg["multipliers"]
    vec = ctx.vector(tuple(cfg["layers"]), cfg["vector_pairs"])  # one float32 vector steers both: the same edit
    prompts, n = load_neutral_prompts()[:cfg["bf16_gen_batch"]], cfg["new_tokens"]

    def extract(m):
        return lambda: caa_vector(m, pairs, layers, progress=False)

    def score(m):
        def run():
            scorer = ABScorer(m, test)
            return [scorer.score(vec, x, [layer])["p_match"] for x in mults]
        return run

    def gen(m):
        def run():
            with steer(m, vec, cfg["gen_multiplier"], [cfg["gen_layer"]], positions="all"):
                return generate(m, prompts, n, batch_size=len(prompts), stop_at_eos=False)
        return run

    return {f"{kind} {d}": f(m) for kind, f in (("extraction", extract), ("A/B scoring", score),
                                                 ("generation", gen)) for d, m in models.items()}


def _check_bf16(out: dict) -> dict:
    a, b = out["extraction float32"], out["extraction bfloat16"]
    cos = {x: torch.nn.functional.cosine_similarity(a.directions[x], b.directions[x], dim=0).item()
           for x in a.directions}
    p32, p16 = out["A/B scoring float32"], out["A/B scoring bfloat16"]
    g32, g16 = out["generation float32"], out["generation bfloat16"]
    return {"caa_cosine_by_layer": cos, "p_match_float32": p32, "p_match_bfloat16": p16,
            "max_abs_p_match_difference": max(abs(x - y) for x, y in zip(p32, p16)),
            "generation_rows_identical": sum(x == y for x, y in zip(g32, g16)), "generation_rows": len(g32),
            "example_float32": g32[0][:80], "example_bfloat16": g16[0][:80]}


BENCHES["bf16"] = Bench(
    "bf16", _setup_bf16,
    [Comparison("extraction bfloat16", "extraction float32", None, "CAA extraction, bf16 vs fp32"),
     Comparison("A/B scoring bfloat16", "A/B scoring float32", None, "A/B scoring, bf16 vs fp32"),
     Comparison("generation bfloat16", "generation float32", None, "steered generation, bf16 vs fp32")],
    _check_bf16, repeats=3, warmup=True, memory=False,
    describe=lambda cfg: f"the same calls on gemma-3-270m loaded in float32 and in bfloat16, timed interleaved: "
                         f"caa_vector from {cfg['bf16_pairs']} sycophancy pairs at layers {cfg['layers']}; "
                         f"ABScorer on {cfg['n_test']} test questions x {len(cfg['multipliers'])} multipliers "
                         f"(layer {cfg['ab_layer']}); greedy generation of {cfg['new_tokens']} tokens, batch "
                         f"{cfg['bf16_gen_batch']}, steered x{cfg['gen_multiplier']} at layer {cfg['gen_layer']}; "
                         "one float32 CAA vector steers both models")


# ---- 4. The full A/B sweep (wall time, no baseline) ----

def run_sweep(ctx: Context, quick: bool, out_dir, behaviors=None, tag: str = "") -> dict:
    """Wall time of ``sas.runs.sweep.ab_sweep``, with the time spent building CAA vectors and scoring apart.

    Full: all 7 behaviours (or ``behaviors``) x layers 2..16 step 2 x multipliers -2..2, every test question.
    Quick: sycophancy x 2 layers x 2 multipliers, 5 test questions, vectors from 16 pairs. ``tag`` names the
    rows file (``sweep_full{tag}.jsonl``); the result carries the rows (``"rows"``) and per-behaviour marks.
    """
    import sas.runs.items as items
    from sas.activations.contrast import Contrast
    from sas.runs.sweep import ab_sweep

    if quick:
        behaviors, layers, mults, n_test, n_pairs = ["sycophancy"], [2, 4], [-1.0, 1.0], 5, 16
    else:
        behaviors, layers, mults, n_test, n_pairs = (behaviors or "all", list(range(2, 17, 2)),
                                                     [-2.0, -1.0, 0.0, 1.0, 2.0], None, None)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"sweep_{'quick' if quick else 'full'}{tag}.jsonl"
    out.unlink(missing_ok=True)
    for p in out.with_suffix(".vectors").glob("*") if out.with_suffix(".vectors").exists() else []:
        p.unlink()
    spent = []
    real_acts, real_load = Contrast.activations, items.load_behavior

    progress = out.with_suffix(".progress.jsonl")  # per-behaviour marks: a cut-short sweep still tells
    progress.unlink(missing_ok=True)

    def mark(**row):
        with open(progress, "a") as f:
            f.write(json.dumps({**row, "wall": time.perf_counter(), "cpu": time.process_time()}) + "\n")

    def timed_acts(self, *a, **k):  # the activations are what building a CAA vector costs
        mark(event="caa_start", behavior=self.name)
        t0 = time.perf_counter()
        v = real_acts(self, *a, **k)
        spent.append(time.perf_counter() - t0)
        mark(event="caa_end", n_pairs=self.n_pairs)
        return v

    def load(b, split="generate"):
        rows = real_load(b, split)
        return rows[:n_pairs] if split == "generate" and n_pairs else rows

    model = ctx.model
    Contrast.activations, items.load_behavior = timed_acts, load
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        df = ab_sweep(model, behaviors, layers, mults, out=out, n_test=n_test, progress=False)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        mark(event="end")
    finally:
        Contrast.activations, items.load_behavior = real_acts, real_load
    scoring = float(df["seconds"].sum())
    return {"behaviors": sorted(set(df["behavior"])), "layers": layers, "multipliers": mults,
            "n_test": n_test or "all (50)", "n_rows": len(df), "total_seconds": total,
            "cpu_seconds": cpu,  # this process's CPU time: what the wall time would be on an idle core
            "extraction_seconds": sum(spent), "scoring_seconds": scoring,
            "other_seconds": total - sum(spent) - scoring, "goal_seconds": 900,
            "goal_met": total <= 900 if not quick else None,
            "marks": [json.loads(line) for line in progress.read_text().splitlines() if line.strip()],
            "rows": df[[c for c in ("behavior", "layer", "multiplier", "p_match", "n", "seconds") if c in df]]
            .to_dict("records")}


# ---- 7. SAE training throughput (sas train-sae) against a bare forward pass ----
from .train_sae import BENCH as _TRAIN_SAE  # noqa: E402

BENCHES["train_sae"] = _TRAIN_SAE


from .conditions import BENCH as _CONDITIONS  # noqa: E402  (what a condition adds to steered generation)

BENCHES[_CONDITIONS.name] = _CONDITIONS

from .features import BENCH as _FEATURES  # noqa: E402  (sas bench's features report: cache against a pass per vector)

BENCHES[_FEATURES.name] = _FEATURES
