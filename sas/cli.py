"""The ``sas`` command: parse, call the library, print. ``sas COMMAND --help`` for details.

Arguments are checked before a model loads; the library does the rest (SAE selection, prompt
formatting, default multipliers come from ``sas.load`` and the method registry).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

DEFAULT_LAYERS = "2,4,6,8,10,12,14,16"
# subcommands that live in their own modules, each with add_parser(subparsers)
EXTRA_COMMANDS = ("sas.export.cli", "sas.serve.cli", "sas.training.cli")


def _ints(s: str) -> list[int]:
    try:
        out = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 2,4,6, got {s!r}")
    if not out:  # an empty list would silently mean "the default"
        raise argparse.ArgumentTypeError(f"expected at least one integer such as 2,4,6, got {s!r}")
    return out


def _floats(s: str) -> list[float]:
    try:
        out = [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as -2,-1,0,1,2, got {s!r}")
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one number such as -2,-1,0,1,2, got {s!r}")
    bad = [x for x in out if not math.isfinite(x)]
    if bad:  # NaN/inf steer nowhere and are not valid JSON in the results file
        raise argparse.ArgumentTypeError(f"numbers must be finite, got {bad[0]} in {s!r}")
    return out


def _names(kind: str):
    def parse(s: str) -> list[str]:
        from .concepts import TASKS, shipped_concepts
        from .load.data import BEHAVIORS
        from .methods.registry import methods

        known = {"method": methods(), "task": {**TASKS, **shipped_concepts()}, "behavior": BEHAVIORS}[kind]
        names = list(BEHAVIORS) if kind == "behavior" and s == "all" else [x for x in s.split(",") if x]
        bad = [x for x in names if x not in known and not (kind == "task" and _concept_file(x))]
        if bad or not names:
            choices = {"behavior": f"{', '.join(sorted(known))} or all", "method": ", ".join(sorted(known)),
                       "task": f"{', '.join(TASKS)}, a shipped concept ({', '.join(shipped_concepts())}) or a "
                               "concept file"}[kind]
            raise argparse.ArgumentTypeError(f"unknown {kind}(s) {', '.join(bad) if bad else repr(s)}; choose from "
                                             f"{choices}")
        return names

    return parse


def _concept_file(path: str) -> bool:
    from .concepts import load_concept

    if not Path(path).is_file():
        return False
    try:
        load_concept(path)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))
    return True


def _model(args):
    import torch

    from .load.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_model(args.model, dtype=args.dtype, device=args.device, n_devices=args.n_devices)


def _check(args, *, needs_items: bool = False) -> None:
    """What can be checked before the model loads."""
    from .load.models import check_layers_offline

    check_layers_offline(args.model, args.layers)
    if needs_items and not (getattr(args, "task", None) or getattr(args, "behavior", None)):
        sys.exit(f"sas {args.command}: give --behavior NAME (or all) for the A/B score, or --task NAME")
    if getattr(args, "task", None) and getattr(args, "behavior", None):
        sys.exit(f"sas {args.command}: give --behavior or --task, not both")


def _saes(args, model) -> dict:
    from .load.saes import load_saes, select_saes

    names = args.sae.split(",") if args.sae else select_saes(model.cfg.model_name, args.layers, args.width)
    return load_saes(names, model)


def _print_tables(df, value: str, extra, extra_title: str) -> None:
    import pandas as pd

    from .reports.tables import summary

    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(f"\n{value} by method, layer and multiplier:")
        print(summary(df, value).to_string())
        print(f"\n{extra_title}:")
        print(extra.round(3).to_string())


def _positive(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {s!r}")
    return n


def _ray_address(s: str) -> str:
    if not s.strip():
        from .runs.ray import EMPTY_ADDRESS  # imports no Ray

        raise argparse.ArgumentTypeError(EMPTY_ADDRESS)
    return s


def _executor(args):
    """A Ray executor for ``--ray [ADDRESS]`` (Ray is imported only then), else None: run here."""
    if getattr(args, "ray", None) is None:
        return None
    from .runs.ray import connect, ray_executor

    address = None if args.ray == "local" else args.ray
    connect(address)  # an unreachable address or workers without sas fail here, before any work
    return ray_executor(address)


def cmd_sweep(args) -> None:
    from .reports.plots import plot_sweep
    from .reports.tables import letter_bias, summary
    from .runs.sweep import ab_sweep, task_sweep

    _check(args, needs_items=True)
    executor = _executor(args)
    model = _model(args)
    out = Path(args.out)
    if args.task:
        from .concepts import TASK_LAYERS

        methods = args.method or ["caa", "actadd"]
        layers = args.layers or list(TASK_LAYERS)
        mults = {m: args.multipliers for m in methods} if args.multipliers else None
        df = task_sweep(model, args.task[0], methods, layers, mults, out, args.n_prompts, args.max_new_tokens,
                        args.seed, with_side_effects=args.side_effects, executor=executor)
        _print_tables(df, "score", summary(df, "perplexity"), "perplexity of the continuations")
    else:
        df = ab_sweep(model, args.behavior, args.layers or _ints(DEFAULT_LAYERS), args.multipliers or [-2, -1, 0, 1, 2],
                      (args.method or ["caa"])[0], out, args.n_test, args.side_effects, balance=not args.unbalanced,
                      seed=args.seed, executor=executor)
        _print_tables(df, "p_match", letter_bias(df), "letter bias (shift of P(A) against that of p_match)")
    print(f"\nrows: {out}\nplot: {plot_sweep(df, out.with_suffix('.png'))}")


def cmd_vectors(args) -> None:
    from .load.data import load_behavior, load_pairs
    from .methods.actadd import actadd_vector
    from .methods.caa import caa_vector
    from .runs.vectors import task_vector

    _check(args)
    model = _model(args)
    layers = args.layers or _ints(DEFAULT_LAYERS)
    if args.pairs:
        name = Path(args.pairs).name.removesuffix(".jsonl").removesuffix(".json")
        vecs = {name: caa_vector(model, load_pairs(args.pairs), layers, name, balance=not args.unbalanced)}
    elif args.positive or args.negative:
        pos, neg = args.positive or "Love", args.negative or "Hate"
        slug = "-".join(re.sub(r"[^A-Za-z0-9]+", "_", w).strip("_")[:24] or "x" for w in (pos, neg))
        vecs = {slug: actadd_vector(model, pos, neg, layers)}  # a name from the prompts, never a path
    elif args.task:
        vecs = {args.task[0]: task_vector(model, args.task[0], args.method, layers)}
    else:
        vecs = {b: caa_vector(model, load_behavior(b), layers, b, balance=not args.unbalanced)
                for b in args.behavior or _names("behavior")("all")}
    for name, v in vecs.items():
        p = v.save(Path(args.out) / f"{v.method}_{name}")
        print(f"{p}  layers {v.layers}  norms {json.dumps({k: round(x, 2) for k, x in v.norms().items()})}")


def cmd_generate(args) -> None:
    from .forward.generate import generate
    from .load.prompts import open_ended_prompts
    from .runs.store import append_row
    from .steering import Receipt, load_vector, steer
    from .steering.vector import read_vector_file

    if not args.prompt and not args.behavior:
        sys.exit("sas generate: give --prompt TEXT (repeatable) or --behavior NAME for its open-ended questions")
    _check(args)
    if args.vector:
        read_vector_file(args.vector, "steering vector")  # a missing or broken file fails before the model loads
    model = _model(args)
    vec = load_vector(args.vector, model=model) if args.vector else None  # dense or sparse (SAS)
    prompts = args.prompt or open_ended_prompts(model, args.behavior[0], args.n)
    kw = dict(max_new_tokens=args.max_new_tokens, do_sample=args.sample, seed=args.seed)
    for mult in args.multipliers or [1.0]:
        steered = {}
        if vec is None or mult == 0:
            texts = generate(model, prompts, **kw)
        else:
            receipt = Receipt()
            with steer(model, vec, mult, args.layers, receipt=receipt):
                texts = generate(model, prompts, **kw)
            steered["receipt"] = receipt.check(f"{args.vector} x {mult:g}")  # no edit is an error, not a row
        for p, t in zip(prompts, texts):
            append_row(args.out, {"model": model.cfg.model_name, "vector": args.vector,
                                  "layers": args.layers or (vec and vec.layers), "multiplier": mult if vec else 0.0,
                                  "prompt": p, "text": t, **kw, **steered})
            print(f"--- x{mult:g} | {p!r}\n{t}\n")


def cmd_compare(args) -> None:
    from .reports.plots import plot_compare
    from .runs.compare import compare

    _check(args, needs_items=True)
    executor = _executor(args)
    model = _model(args)
    saes = _saes(args, model)
    mults = None
    if args.multipliers or args.sas_multipliers:
        mults = {"caa": args.multipliers} if args.multipliers else {}
        if args.sas_multipliers or args.multipliers:
            mults.update({m: args.sas_multipliers or args.multipliers for m in ("sas", "sas_dense")})
    out = Path(args.out)
    df = compare(model, saes, args.behavior or (), args.task[0] if args.task else None, mults, out, args.tau,
                 args.mean, args.top_k, args.n_test, args.n_prompts, args.max_new_tokens, args.seed,
                 args.side_effects, executor=executor)
    cols = [c for c in ("n_features", "cos_caa", "resid_change", "perplexity") if c in df]
    _print_tables(df, "score" if args.task else "p_match", df.groupby(["method", "layer"])[cols].mean(),
                  "per method and layer")
    print(f"\nrows: {out}\nplot: {plot_compare(df, out.with_suffix('.png'))}")


def _concepts(s: str) -> list[str]:
    from .concepts import get_concept

    names = [x for x in s.split(",") if x]
    try:
        [get_concept(x) for x in names]  # a bad concept file fails here, before the model loads
    except (ValueError, FileNotFoundError) as e:
        raise argparse.ArgumentTypeError(str(e))
    return names


def cmd_bench(args) -> None:
    from .evaluation.judge import judge_from_args
    from .reports.bench import score_tables, write_features, write_report
    from .runs.bench import FLUENCY, MAX_EXTEND, METHODS, N_TEST, N_TUNE, QUICK, STRENGTHS, bench, judge_rows

    quick = QUICK if args.quick else {}
    judge = judge_from_args(args.judge_url, args.judge_model, Path(args.out).with_suffix(".judge"))
    if args.layers is None and not args.sae:
        args.layers = [5] if args.quick else None
    _check(args)
    executor = _executor(args)
    model = _model(args)
    saes = _saes(args, model)
    result = bench(model, saes, args.concept or quick.get("concepts", ()),
                   args.methods or quick.get("methods", METHODS), None,
                   args.strengths or quick.get("strengths", STRENGTHS), args.budgets,
                   args.n_tune or quick.get("n_tune", N_TUNE), args.n_test or quick.get("n_test", N_TEST),
                   args.max_new_tokens or quick.get("max_new_tokens", 16), args.seed, args.out,
                   batch_size=args.batch_size, executor=executor, fluency=args.fluency or FLUENCY,
                   extend=quick.get("extend", MAX_EXTEND) if args.extend is None else args.extend)
    if judge is not None:
        with judge:
            judge_rows(result, judge, args.out)
    report = write_report(result, args.report or Path(args.out).with_suffix(""))
    features = None if args.no_features else write_features(result, report.parent, model, saes)
    print("\n" + "\n".join(score_tables(result)))
    print(f"rows: {args.out}\nreport: {report}" + (f"\nfeatures: {features}" if features else ""))


def cmd_compose(args) -> None:
    from .reports.compose import write_report
    from .runs.compose import BUDGET, N_TEST, N_TUNE, SETUPS, compose

    args.layers = sorted({x for s in (args.setups or SETUPS) for x in (s.layer_a, s.layer_b)})
    _check(args)
    if args.report_only:  # SAEs by name, no model: nothing is generated
        from .hooks import layer_of
        from .load.saes import registry, select_saes

        model, names = None, args.sae.split(",") if args.sae else select_saes(args.model, args.layers, args.width)
        saes = {layer_of(registry()[n]["hook"]): n for n in names}
    else:
        model = _model(args)
        saes = _saes(args, model)
    result = compose(model, saes, args.pairs, args.setups or SETUPS, args.budget or BUDGET, args.tuning,
                     args.n_tune or N_TUNE, args.n_test or N_TEST, args.max_new_tokens, args.seed, args.out,
                     batch_size=args.batch_size, model_name=args.model, dtype=args.dtype, run=not args.report_only)
    report = write_report(result, args.report or Path(args.out).with_suffix(".md"))
    print(report.read_text())
    print(f"rows: {args.out}\nreport: {report}")


def _pairs(s: str) -> list[tuple[str, str]]:
    from .concepts import get_concept
    from .runs.compose import parse_pair

    try:
        pairs = [parse_pair(p) for p in s.split(",") if p]
        [get_concept(c) for p in pairs for c in p]
    except (ValueError, FileNotFoundError) as e:
        raise argparse.ArgumentTypeError(str(e))
    return pairs


def _setups(s: str) -> list:
    from .runs.compose import Setup

    try:
        return [Setup.parse(p) for p in s.split(",") if p]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def cmd_inspect(args) -> None:
    from .load.data import load_text_sample
    from .evaluation.features import feature_table, logit_effects, top_contexts
    from .reports.features import report
    from .steering.sparse import SparseVector

    if not args.vector and not args.features:
        sys.exit("sas inspect: give --vector a SAS vector or --features 12,345")
    _check(args)
    model = _model(args)
    if args.html:
        return _inspect_html(args, model)
    saes = _saes(args, model)
    texts = load_text_sample(args.n_texts)
    if args.vector:
        v = SparseVector.load(args.vector, saes=saes, model=model)
        layer = v.layers[0]
        path = report(model, saes[layer], v, texts, args.out, n_features=args.n_features or 10)
        print(feature_table(model, saes[layer], v).head(args.n_features or 10).to_string())
        print(f"\nreport: {path}")
    else:
        sae = next(iter(saes.values()))
        print(logit_effects(model, sae, args.features).to_string())
        print(top_contexts(model, sae, args.features, texts, k=5, max_tokens=20_000).to_string())


def _inspect_html(args, model) -> None:
    from .evaluation.features import vector_contrast
    from .reports.dashboard import build_dashboard
    from .steering.sparse import SparseVector

    saes = _saes(args, model) if args.sae or not args.vector else None  # a vector names its own SAE
    if args.vector:
        v = SparseVector.load(args.vector, saes=saes, model=model)
        what, sae, contrast = v, None, vector_contrast(model, v, args.contrast)
    else:
        what, sae, contrast = args.features, next(iter(saes.values())), None
    index = build_dashboard(model, sae, what, args.html, contrast=contrast, n_features=args.n_features,
                            max_tokens=args.max_tokens, progress=True)
    print(f"dashboard: {index}")


def _common(sp) -> None:
    sp.add_argument("--model", default="gemma-3-270m", help="gemma-3-270m (default, offline), "
                    "smollm2-135m-instruct, or a hub name TransformerLens knows")
    sp.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="model, SAEs and hooks compute in it; vectors are saved in float32")
    sp.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cpu, cuda, cuda:N")
    sp.add_argument("--n-devices", type=int, default=1, help="split the model's blocks over this many GPUs")
    sp.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    sp.add_argument("--layers", type=_ints, help="comma-separated layers")


def _sae_args(sp) -> None:
    sp.add_argument("--sae", help="SAE names or folders, comma-separated (default: the shipped ones)")
    sp.add_argument("--width", type=int, help="pick shipped SAEs of this width (without --sae: per layer the SAE "
                    "whose card is marked default, else the one trained on the most tokens)")


def _evaluation(sp) -> None:
    sp.add_argument("--behavior", type=_names("behavior"), help="a CAA behaviour, a comma list, or all")
    sp.add_argument("--task", type=_names("task"), help="an open-ended task instead of A/B: sentiment, topic, or any "
                    "concept (a shipped name or a concept file), steered with raw multipliers")
    sp.add_argument("--n-test", type=_positive, help="A/B test questions per behaviour (default all 50)")
    sp.add_argument("--n-prompts", type=_positive, default=40)
    sp.add_argument("--max-new-tokens", type=_positive, default=30)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--side-effects", action="store_true", help="also MMLU, TruthfulQA and perplexity per row")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sas", description="Sparse and dense activation steering, side by side.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sweep", help="A/B behaviour score or open-ended task over layers x multipliers",
                       description="Writes one JSONL row per condition as it goes; rerun to resume.")
    _common(s)
    _evaluation(s)
    s.add_argument("--ray", nargs="?", const="local", type=_ray_address, metavar="ADDRESS",
                   help="run the conditions on Ray: "
                   "alone, a cluster on this machine; or a head's host:6379, ray://host:10001, auto")
    s.add_argument("--method", type=_names("method"), help="a method (A/B, default caa); for tasks a comma list "
                   "(default caa,actadd)")
    s.add_argument("--multipliers", type=_floats, help="default: each method's own")
    s.add_argument("--out", default="results/sweep.jsonl")
    s.add_argument("--unbalanced", action="store_true", help="do not letter-balance CAA pairs")
    s.set_defaults(fn=cmd_sweep)

    v = sub.add_parser("vectors", help="build and save steering vectors")
    _common(v)
    v.add_argument("--behavior", type=_names("behavior"), help="a CAA behaviour, a comma list, or all (default)")
    v.add_argument("--pairs", help="your own A/B pairs file (JSON/JSONL, CAA schema)")
    v.add_argument("--task", type=_names("task"))
    v.add_argument("--method", default="caa", choices=["caa", "actadd"])
    v.add_argument("--positive", help="ActAdd positive prompt (e.g. Love)")
    v.add_argument("--negative", help="ActAdd negative prompt (e.g. Hate)")
    v.add_argument("--unbalanced", action="store_true")
    v.add_argument("--out", default="vectors")
    v.set_defaults(fn=cmd_vectors)

    g = sub.add_parser("generate", help="generate text, steered by a saved vector")
    _common(g)
    g.add_argument("--vector", help="a .safetensors vector from `sas vectors`")
    g.add_argument("--multipliers", type=_floats, help="one generation per multiplier")
    g.add_argument("--prompt", action="append")
    g.add_argument("--behavior", type=_names("behavior"), help="use this behaviour's open-ended test questions")
    g.add_argument("-n", type=_positive, default=5, help="how many open-ended questions")
    g.add_argument("--max-new-tokens", type=_positive, default=48)
    g.add_argument("--sample", action="store_true")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", help="append the generations to this JSONL file")
    g.set_defaults(fn=cmd_generate)

    c = sub.add_parser("compare", help="CAA vs SAS vs SAS-dense on the same data and evaluation",
                       description="Layers default to those with a shipped SAE. Rows are written as they go.")
    _common(c)
    _evaluation(c)
    _sae_args(c)
    c.add_argument("--ray", nargs="?", const="local", type=_ray_address, metavar="ADDRESS",
                   help="run the conditions on Ray: "
                   "alone, a cluster on this machine; or a head's host:6379, ray://host:10001, auto")
    c.add_argument("--multipliers", type=_floats, help="for every method (default: each method's own: CAA -2..2, "
                   "SAS and SAS-dense -8..8, because the sparse edit is several times smaller per unit)")
    c.add_argument("--sas-multipliers", type=_floats, help="for SAS and SAS-dense, if different from --multipliers")
    c.add_argument("--tau", type=float, default=0.1, help="SAS frequency threshold in [0, 1]")
    c.add_argument("--mean", default="all", choices=["all", "active"])
    c.add_argument("--top-k", type=int)
    c.add_argument("--out", default="results/compare.jsonl")
    c.set_defaults(fn=cmd_compare)

    b = sub.add_parser("bench", help="sparse vs dense steering on many concepts at matched fluency (sas bench)",
                       description="Tune each method's strength on the tuning prompts of every concept to reach each "
                       "fluency budget, report on the test prompts with bootstrap intervals, paired against CAA and "
                       "prompting. Resumable: rerun the same command to continue.")
    _common(b)
    _sae_args(b)
    b.add_argument("--concept", type=_concepts, help="shipped concept names or concept files (YAML/JSONL), "
                   "comma-separated (default: every shipped concept)")
    b.add_argument("--methods", type=_names("method"), help="comma-separated (default caa,actadd,sas,sas_dense,prompt)")
    b.add_argument("--strengths", type=_floats, help="relative edit sizes to start tuning from (default "
                   "0.02,0.05,0.1,0.2; the grid then extends until every budget is bracketed)")
    b.add_argument("--extend", type=int, help="rounds of extending the strength grid per method and layer "
                   "(doubling up, halving down) until each budget has a strength within it and one beyond (default 4)")
    b.add_argument("--fluency", choices=("perplexity", "smollm2", "kl"), help="the budget's fluency measure "
                   "(docs/fluency_check compares them with a reader)")
    b.add_argument("--budgets", type=_floats, help="fluency budgets: ratios to unsteered for perplexity and "
                   "smollm2 (default 1.25,1.5,2), nats for kl (default 0.05,0.1,0.2)")
    b.add_argument("--n-tune", type=_positive, help="tuning prompts per concept (default 48)")
    b.add_argument("--n-test", type=_positive, help="test prompts per concept (default 250, or all of a concept's "
                   "test split)")
    b.add_argument("--max-new-tokens", type=_positive, help="sampled tokens per continuation (default 16)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--batch-size", type=_positive, default=128, help="rows per generation batch (128: all strengths of a "
                   "condition on the tuning prompts in one batch; on this CPU 1.4x faster than 32)")
    b.add_argument("--quick", action="store_true", help="2 concepts, CAA/SAS/prompting, layer 5, few prompts: "
                   "checks the pipeline in minutes (numbers too noisy to report)")
    b.add_argument("--ray", nargs="?", const="local", type=_ray_address, metavar="ADDRESS",
                   help="run the conditions on Ray: "
                   "alone, a cluster on this machine; or a head's host:6379, ray://host:10001, auto")
    b.add_argument("--out", default="results/bench.jsonl")
    b.add_argument("--report", help="report folder (default: --out without .jsonl)")
    b.add_argument("--no-features", action="store_true", help="skip features.md (what each sparse vector is made "
                   "of: logit-lens tokens, output scores, firing frequencies, held-out contexts)")
    b.add_argument("--judge-url", help="an OpenAI-compatible endpoint for AxBench's LM judge (off by default)")
    b.add_argument("--judge-model", help="the judge model's name at --judge-url")
    b.set_defaults(fn=cmd_bench)

    k = sub.add_parser("compose", help="two steering vectors at once: each concept together vs alone, fluency, overlap",
                       description="Steer with both vectors of each pair of concepts at the strengths the tuning "
                       "split chose for each alone at a fluency budget; report each concept's score together vs "
                       "alone, the perplexity together vs each alone (paired bootstrap intervals) and the overlap "
                       "of the two vectors. Resumable: rerun the same command to continue.")
    _common(k)
    _sae_args(k)
    k.add_argument("--pairs", type=_pairs, required=True, help="comma-separated A+B pairs of concepts, e.g. "
                   "sentiment-positive+weddings,sports+cooking")
    k.add_argument("--setups", type=_setups, help="comma-separated METHOD@LAYER+METHOD@LAYER (default "
                   "caa@5+caa@5,sas@5+sas@5,caa@5+sas@5,caa@5+caa@9,sas@5+sas@9,caa@5+sas@9)")
    k.add_argument("--budget", type=float, help="perplexity ratio to unsteered the strengths are chosen at (1.5)")
    k.add_argument("--tuning", help="an earlier `sas bench` results file whose tuning rows to choose from (default: "
                   "run the tuning split into <out>.tuning.jsonl)")
    k.add_argument("--n-tune", type=_positive, help="tuning prompts per concept when the tuning runs here (24)")
    k.add_argument("--n-test", type=_positive, help="test prompts shared by every condition (100)")
    k.add_argument("--max-new-tokens", type=_positive, default=16)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--batch-size", type=_positive, default=128)
    k.add_argument("--out", default="results/compose.jsonl")
    k.add_argument("--report", help="the Markdown report (default: --out with .md)")
    k.add_argument("--report-only", action="store_true", help="generate nothing: the report of the rows already "
                   "in --out (a partial run; with --tuning, the model is not loaded)")
    k.set_defaults(fn=cmd_compose)

    n = sub.add_parser("inspect", help="what SAE features mean: contexts, promoted tokens, a report")
    _common(n)
    n.add_argument("--vector", help="a saved SAS vector")
    n.add_argument("--features", type=_ints, help="feature ids")
    _sae_args(n)
    n.add_argument("--n-features", type=int, help="features shown (default 10; --html: all)")
    n.add_argument("--n-texts", type=int, default=100)
    n.add_argument("--out", default="results/features.md")
    n.add_argument("--html", metavar="OUT", help="write HTML feature dashboards to this folder instead")
    n.add_argument("--contrast", help="--html: the vector's data, for per-side firing (a task or behaviour; "
                   "default the vector's behaviour)")
    n.add_argument("--max-tokens", type=int, help="--html: held-out tokens for the per-SAE cache (default all)")
    n.set_defaults(fn=cmd_inspect)

    for module in EXTRA_COMMANDS:
        __import__(module, fromlist=["add_parser"]).add_parser(sub)
    return p


def split_negative_numbers(argv: list[str]) -> list[str]:
    """``--multipliers -2,-1,0`` as ``--multipliers=-2,-1,0``: argparse reads ``-2,-1,0`` as an option."""
    out, i = [], 0
    while i < len(argv):  # other arguments, empty strings too (--prompt ""), pass unchanged
        if argv[i] in ("--multipliers", "--sas-multipliers") and i + 1 < len(argv) and argv[i + 1][:1] == "-":
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv=None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from the tokenizer
    args = parser().parse_args(split_negative_numbers(sys.argv[1:] if argv is None else argv))
    try:
        args.fn(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, OSError, IndexError, KeyError) as e:
        sys.exit(f"sas {args.command}: error: {e}")


if __name__ == "__main__":
    main()
