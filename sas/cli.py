"""The ``sas`` command: build vectors, sweep, generate. ``sas COMMAND --help`` for details."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_LAYERS = "2,4,6,8,10,12,14,16"


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 2,4,6, got {s!r}")


def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as -2,-1,0,1,2, got {s!r}")


def _model(args):
    import torch

    from .models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_model(args.model, dtype=args.dtype)


def _behaviors(arg: str) -> list[str]:
    from .datasets import BEHAVIORS

    return list(BEHAVIORS) if arg == "all" else arg.split(",")


def cmd_sweep(args) -> None:
    import pandas as pd

    from .plots import plot_sweep
    from .sweep import ab_sweep, letter_bias, summary, task_sweep
    from .tasks import DEFAULT_LAYERS as TASK_LAYERS, DEFAULT_MULTIPLIERS

    if not args.task:  # check the cheap things before loading the model
        from .datasets import BEHAVIORS

        if not args.behavior:
            sys.exit("sas sweep: give --behavior NAME (or all) for the A/B score, or --task sentiment|topic")
        bad = [b for b in _behaviors(args.behavior) if b not in BEHAVIORS]
        if bad:
            raise ValueError(f"unknown behaviour(s) {', '.join(bad)}; choose from {', '.join(BEHAVIORS)} or all")
    model = _model(args)
    out = Path(args.out)
    if args.task:
        methods = args.method.split(",") if args.method else ["caa", "actadd"]
        layers = args.layers or TASK_LAYERS[args.task]
        mults = {m: args.multipliers for m in methods} if args.multipliers else DEFAULT_MULTIPLIERS
        df = task_sweep(model, args.task, methods, layers, mults, out, args.n_prompts, args.max_new_tokens,
                        args.seed)
        table = summary(df, "score")
        extra = summary(df, "perplexity")
        print("\nscore (VADER compound for sentiment, share mentioning the topic for topic):")
    else:
        df = ab_sweep(model, _behaviors(args.behavior), args.layers or _ints(DEFAULT_LAYERS),
                      args.multipliers or [-2, -1, 0, 1, 2], args.method or "caa", out, args.n_test,
                      args.side_effects, balance=not args.unbalanced)
        table = summary(df, "p_match")
        extra = letter_bias(df)
        print("\np_match (normalised P of the behaviour-matching letter):")
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(table.to_string())
        print("\nperplexity of continuations:" if args.task else "\nletter bias (shift of P(A) vs of p_match):")
        print(extra.round(3).to_string())
    plot = plot_sweep(df, out.with_suffix(".png"))
    print(f"\nrows: {out}\nplot: {plot}")


def cmd_vectors(args) -> None:
    from .actadd import actadd_vector
    from .caa import caa_vector
    from .datasets import load_behavior, load_pairs
    from .tasks import task_vector

    model = _model(args)
    layers = args.layers or _ints(DEFAULT_LAYERS)
    out = Path(args.out)
    if args.pairs:
        vecs = {Path(args.pairs).stem: caa_vector(model, load_pairs(args.pairs), layers, Path(args.pairs).stem,
                                                  balance=not args.unbalanced)}
    elif args.positive or args.negative:
        pos_, neg_ = args.positive or "Love", args.negative or "Hate"
        vecs = {"-".join(w.replace(" ", "_")[:24] for w in (pos_, neg_)): actadd_vector(model, pos_, neg_, layers)}
    elif args.task:
        vecs = {args.task: task_vector(model, args.task, args.method, layers)}
    else:
        vecs = {b: caa_vector(model, load_behavior(b), layers, b, balance=not args.unbalanced)
                for b in _behaviors(args.behavior or "all")}
    for name, v in vecs.items():
        p = v.save(out / f"{v.method}_{name}")
        print(f"{p}  layers {v.layers}  norms {json.dumps({k: round(x, 2) for k, x in v.norms().items()})}")


def cmd_generate(args) -> None:
    from .datasets import load_open_ended
    from .generation import generate
    from .steering import steer
    from .sweep import append_row
    from .vector import SteeringVector

    model = _model(args)
    prompts = args.prompt or (load_open_ended(args.behavior)[:args.n] if args.behavior else None)
    if not prompts:
        sys.exit("sas generate: give --prompt TEXT (repeatable) or --behavior NAME for its open-ended questions")
    if args.behavior and not args.prompt:
        from .prompts import is_chat

        if not is_chat(model):
            prompts = [f"Question: {q}\n\nAnswer:" for q in prompts]
    kw = dict(max_new_tokens=args.max_new_tokens, do_sample=args.sample, seed=args.seed)
    vec = SteeringVector.load(args.vector) if args.vector else None
    for mult in args.multipliers or [1.0]:
        if vec is None:
            texts = generate(model, prompts, **kw)
        else:
            with steer(model, vec, mult, args.layers):
                texts = generate(model, prompts, **kw)
        for p, t in zip(prompts, texts):
            row = {"model": model.cfg.model_name, "vector": args.vector, "layers": args.layers or (vec and vec.layers),
                   "multiplier": mult if vec else 0.0, "prompt": p, "text": t, **kw}
            append_row(args.out, row)
            print(f"--- x{mult:g} | {p!r}\n{t}\n")


def _saes(args, model):
    from .hooks import layer_of
    from .load.saes import load_sae, registry, sae_layer

    if args.sae:
        names = args.sae.split(",")
    else:
        cards = {n: c for n, c in registry().items() if c.get("model") == model.cfg.model_name}
        by_layer = {}
        for n, c in sorted(cards.items(), key=lambda kv: kv[1].get("width", 0)):
            layer = layer_of(c["hook"])
            if (args.layers is None or layer in args.layers) and (args.width is None or c.get("width") == args.width):
                by_layer.setdefault(layer, n)
        names = list(by_layer.values())
        if not names:
            sys.exit(f"no shipped SAE for {model.cfg.model_name} at layers {args.layers}: pass --sae NAME|FOLDER "
                     f"(shipped: {sorted(registry())})")
    saes = {}
    for n in names:
        sae = load_sae(n, model)
        sae.sas_name = n
        saes[sae_layer(sae)] = sae
    return saes


def cmd_compare(args) -> None:
    import pandas as pd

    from .compare import DEFAULT_MULTIPLIERS, compare, plot_compare
    from .sweep import summary

    model = _model(args)
    saes = _saes(args, model)
    if not args.task and not args.behavior:
        sys.exit("sas compare: give --behavior NAME (or all) or --task sentiment|topic")
    mults = {m: args.multipliers or d for m, d in DEFAULT_MULTIPLIERS.items()}
    if args.sas_multipliers:
        mults["sas"] = mults["sas_dense"] = args.sas_multipliers
    out = Path(args.out)
    df = compare(model, saes, _behaviors(args.behavior) if args.behavior else (), args.task, mults, out,
                 args.tau, args.mean, args.top_k, args.n_test, args.n_prompts, args.max_new_tokens, args.seed,
                 args.side_effects)
    value = "score" if args.task else "p_match"
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(f"\n{value} by method:")
        print(summary(df, value).to_string())
        cols = [c for c in ("n_features", "cos_caa", "perplexity") if c in df]
        print("\n" + df.groupby(["method", "layer"])[cols].mean().round(3).to_string())
    print(f"\nrows: {out}\nplot: {plot_compare(df, out.with_suffix('.png'))}")


def cmd_inspect(args) -> None:
    from .datasets import load_text_sample
    from .features import feature_table, logit_effects, report, top_contexts
    from .sparse import SparseVector

    model = _model(args)
    saes = _saes(args, model)
    texts = load_text_sample(args.n_texts)
    if args.vector:
        v = SparseVector.load(args.vector, saes=saes, model=model)
        layer = v.layers[0]
        path = report(model, saes[layer], v, texts, args.out, n_features=args.n_features)
        print(feature_table(model, saes[layer], v).head(args.n_features).to_string())
        print(f"\nreport: {path}")
    else:
        if not args.features:
            sys.exit("sas inspect: give --vector a SAS vector or --features 12,345")
        sae = next(iter(saes.values()))
        print(logit_effects(model, sae, args.features).to_string())
        print(top_contexts(model, sae, args.features, texts, k=5, max_tokens=20_000).to_string())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="sas", description="Sparse and dense activation steering, side by side.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--model", default="gemma-3-270m", help="gemma-3-270m (default, offline), "
                        "smollm2-135m-instruct, or a hub name TransformerLens knows")
        sp.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
        sp.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
        sp.add_argument("--layers", type=_ints, help="comma-separated layers")

    s = sub.add_parser("sweep", help="A/B behaviour score or open-ended task over layers x multipliers",
                       description="Writes one JSONL row per condition as it goes; rerun to resume.")
    common(s)
    s.add_argument("--behavior", help="a CAA behaviour, a comma list, or all")
    s.add_argument("--task", choices=["sentiment", "topic"], help="open-ended task instead of A/B")
    s.add_argument("--method", help="caa (A/B); for tasks caa,actadd (default both)")
    s.add_argument("--multipliers", type=_floats)
    s.add_argument("--out", default="results/sweep.jsonl")
    s.add_argument("--n-test", type=int, help="A/B test questions per behaviour (default all 50)")
    s.add_argument("--side-effects", action="store_true", help="also MMLU, TruthfulQA and perplexity per row")
    s.add_argument("--unbalanced", action="store_true", help="do not letter-balance CAA pairs")
    s.add_argument("--n-prompts", type=int, default=40)
    s.add_argument("--max-new-tokens", type=int, default=30)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_sweep)

    v = sub.add_parser("vectors", help="build and save steering vectors")
    common(v)
    v.add_argument("--behavior", help="a CAA behaviour, a comma list, or all (default)")
    v.add_argument("--pairs", help="your own A/B pairs file (JSON/JSONL, CAA schema)")
    v.add_argument("--task", choices=["sentiment", "topic"])
    v.add_argument("--method", default="caa", choices=["caa", "actadd"])
    v.add_argument("--positive", help="ActAdd positive prompt (e.g. Love)")
    v.add_argument("--negative", help="ActAdd negative prompt (e.g. Hate)")
    v.add_argument("--unbalanced", action="store_true")
    v.add_argument("--out", default="vectors")
    v.set_defaults(fn=cmd_vectors)

    g = sub.add_parser("generate", help="generate text, steered by a saved vector")
    common(g)
    g.add_argument("--vector", help="a .safetensors vector from `sas vectors`")
    g.add_argument("--multipliers", type=_floats, help="one generation per multiplier")
    g.add_argument("--prompt", action="append")
    g.add_argument("--behavior", help="use this behaviour's open-ended test questions")
    g.add_argument("-n", type=int, default=5, help="how many open-ended questions")
    g.add_argument("--max-new-tokens", type=int, default=48)
    g.add_argument("--sample", action="store_true")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", help="append the generations to this JSONL file")
    g.set_defaults(fn=cmd_generate)

    c = sub.add_parser("compare", help="CAA vs SAS vs SAS-dense on the same data and evaluation",
                       description="Layers default to those with a shipped SAE. Rows are written as they go.")
    common(c)
    c.add_argument("--behavior", help="a CAA behaviour, a comma list, or all")
    c.add_argument("--task", choices=["sentiment", "topic"])
    c.add_argument("--sae", help="SAE names or folders, comma-separated (default: the shipped ones)")
    c.add_argument("--width", type=int, help="pick shipped SAEs of this width")
    c.add_argument("--multipliers", type=_floats, help="for every method (default: CAA -2..2, SAS and "
                   "SAS-dense -8..8, because the sparse edit is several times smaller per unit)")
    c.add_argument("--sas-multipliers", type=_floats, help="for SAS and SAS-dense, if different from --multipliers")
    c.add_argument("--tau", type=float, default=0.1, help="SAS frequency threshold in [0, 1]")
    c.add_argument("--mean", default="all", choices=["all", "active"])
    c.add_argument("--top-k", type=int)
    c.add_argument("--n-test", type=int)
    c.add_argument("--n-prompts", type=int, default=40)
    c.add_argument("--max-new-tokens", type=int, default=30)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--side-effects", action="store_true")
    c.add_argument("--out", default="results/compare.jsonl")
    c.set_defaults(fn=cmd_compare)

    n = sub.add_parser("inspect", help="what SAE features mean: contexts, promoted tokens, a report")
    common(n)
    n.add_argument("--vector", help="a saved SAS vector")
    n.add_argument("--features", type=_ints, help="feature ids")
    n.add_argument("--sae", help="SAE name or folder")
    n.add_argument("--width", type=int)
    n.add_argument("--n-features", type=int, default=10)
    n.add_argument("--n-texts", type=int, default=100)
    n.add_argument("--out", default="results/features.md")
    n.set_defaults(fn=cmd_inspect)

    # let "--multipliers -2,-1,0" through: argparse would read "-2,-1,0" as an option
    argv = list(sys.argv[1:] if argv is None else argv)
    for i in range(len(argv) - 1):
        if argv[i] in ("--multipliers", "--sas-multipliers") and argv[i + 1][:1] == "-":
            argv[i:i + 2] = [f"{argv[i]}={argv[i + 1]}", ""]
    args = p.parse_args([a for a in argv if a != ""])
    try:
        args.fn(args)
    except (ValueError, FileNotFoundError, ImportError, OSError) as e:
        sys.exit(f"sas {args.command}: error: {e}")


if __name__ == "__main__":
    main()
