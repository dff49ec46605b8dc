"""``sas bench``: sparse against dense steering on many concepts, at matched fluency, with intervals.

    result = bench(model, saes, concepts=["weddings", "sentiment-negative"], out="results/bench.jsonl")
    write_report(result, "docs/bench")  # sas.reports.bench: Markdown report and figures

Protocol (two grids of the runner, one results file, resumable):

1. **Tuning.** Every method at every layer it runs at (sparse methods: the layers of ``saes``), at relative
   strengths ``strengths`` (the edit's norm over the mean residual norm at that layer, measured on the tuning
   prompts: :mod:`sas.steering.strength`), on ``n_tune`` prompts of the concept's tuning split; the prompting
   baseline with its prefix; the unsteered model.
2. **Choice, per concept, method and fluency budget** ``b``: among the tuning conditions whose perplexity
   (of the continuation given the prompt, under the unsteered model) is at most ``b`` x the unsteered one and
   whose distinct-2 ratio is at least ``distinct_guard`` x the unsteered one (repeated text has low perplexity),
   the one with the highest concept score, over strengths and layers. None: "not reached".
3. **Test.** The chosen conditions on ``n_test`` prompts of the disjoint test split, prompt ``i`` sampled
   with seed ``seed + i`` for every condition, so methods compare prompt by prompt (paired bootstrap).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..methods.registry import get_method
from .grid import Condition, Grid, run_grid
from .store import hold, read_rows

FLUENCY = "perplexity"  # the default budget's measure (sas.evaluation.fluency; docs/fluency_check compares them)
STRENGTHS = (0.02, 0.05, 0.1, 0.2)  # a start: the grid extends until every budget is bracketed (extend_grid)
MAX_EXTEND = 4  # rounds of doubling up (or halving down) per method and layer
METHODS = ("caa", "actadd", "sas", "sas_dense", "prompt")
DISTINCT_GUARD = 0.8
# 48 tuning prompts: on the landed 24-prompt run a bootstrap of the tuning split repeats the choice 49% of the time
# with 6 prompts, 58% with 12, 66% with 24 (about +8 points per doubling; docs/bench_guide.md)
N_TUNE, N_TEST = 48, 250
# checks the pipeline end to end in a couple of minutes (CI runs it); its numbers are too noisy to report
QUICK = dict(concepts=("weddings", "sentiment-negative"), methods=("caa", "sas", "prompt"), strengths=(0.04,),
             n_tune=4, n_test=6, max_new_tokens=6, extend=0)


def budgets_of(fluency: str = FLUENCY) -> tuple[float, ...]:
    """The default budgets of a fluency measure (ratios to unsteered for perplexities, nats for KL)."""
    from ..evaluation.fluency import get_measure

    return get_measure(fluency).budgets


@dataclass
class Choice:
    """What the tuning split chose for one concept, method and budget."""

    concept: str
    method: str
    budget: float
    layer: int | None = None
    strength: float | None = None
    tuning_score: float | None = None
    tuning_ppl_ratio: float | None = None  # the fluency measure's value (a ratio, or KL in nats)
    why: str = ""  # why no condition met the budget
    edge: str = ""  # the choice is the largest (or smallest) strength tried at its layer: the grid may be short

    @property
    def reached(self) -> bool:
        return self.strength is not None


@dataclass
class BenchResult:
    tuning: list[dict]
    test: list[dict]
    choices: list[Choice]
    budgets: tuple[float, ...]
    settings: dict = field(default_factory=dict)

    judged: list[dict] = field(default_factory=list)  # judge rows of the test conditions (when a judge ran)
    grid: Grid | None = field(default=None, repr=False)  # the test grid (its runner rebuilds or reloads the vectors)


def _ok(row: dict | None) -> bool:
    return row is not None and "skipped" not in row and row.get("perplexity") is not None


def fluency_value(row: dict, unsteered: dict, fluency: str = FLUENCY) -> float:
    """The row's value on the fluency measure: a ratio to the unsteered row's, or (KL) the value itself. A NaN is
    refused."""
    from ..evaluation.fluency import get_measure

    m = get_measure(fluency)
    if row.get(m.key) is None:
        raise ValueError(f"the row of {row.get('method')} at strength {row.get('multiplier')} has no {m.key!r}: run "
                         f"the benchmark with fluency={fluency!r} (it computes that measure)")
    v = row[m.key] / unsteered[m.key] if m.ratio else row[m.key]
    if math.isnan(v):
        raise ValueError(f"the fluency measure {fluency!r} is NaN for {row.get('method')} at strength "
                         f"{row.get('multiplier')}; refusing to compare it with a budget")
    return v


def choose(tuning: list[dict], budgets: Sequence[float] | None = None, distinct_guard: float = DISTINCT_GUARD,
           fluency: str = FLUENCY) -> list[Choice]:
    """Per concept, method and budget, the tuning condition with the best score within the budget of the
    ``fluency`` measure (:mod:`sas.evaluation.fluency`)."""
    budgets = budgets_of(fluency) if budgets is None else budgets
    unsteered = {r["concept"]: r for r in tuning if _ok(r) and float(r["multiplier"]) == 0}
    groups: dict[tuple, list[dict]] = {}
    for r in tuning:
        if r is not None:
            groups.setdefault((r["concept"], r["method"]), []).append(r)
    out = []
    for (concept, method), rows in groups.items():
        u = unsteered.get(concept)
        steered = [r for r in rows if float(r["multiplier"]) != 0]
        tried = {}
        for r in steered:
            if _ok(r):
                tried.setdefault(int(r["layer"]), []).append(float(r["multiplier"]))
        for b in budgets:
            if u is None:
                out.append(Choice(concept, method, b, why="no unsteered row"))
                continue
            fits = [r for r in steered if _ok(r) and fluency_value(r, u, fluency) <= b
                    and r["distinct2"] >= distinct_guard * u["distinct2"]]
            if not fits:
                skipped = [r["skipped"] for r in steered if "skipped" in r]
                vals = sorted((float(r["multiplier"]), fluency_value(r, u, fluency)) for r in steered if _ok(r))
                why = (f"no strength meets the {fluency} budget ({fluency} at each strength: "
                       f"{', '.join(f'{s:g}: {v:.2f}' for s, v in vals)}; or distinct-2 below the guard)"
                       if vals else "; ".join(sorted(set(skipped))) or "no rows")
                out.append(Choice(concept, method, b, why=why))
                continue
            best = max(fits, key=lambda r: (r["score"], -float(r["multiplier"]), -int(r["layer"])))
            s, layer = float(best["multiplier"]), int(best["layer"])
            edge = ("largest strength tried" if s == max(tried[layer]) and len(tried[layer]) > 1 else
                    "smallest strength tried" if s == min(tried[layer]) and len(tried[layer]) > 1 else "")
            if not get_method(method).steers:
                edge = ""
            out.append(Choice(concept, method, b, layer, s, best["score"], fluency_value(best, u, fluency),
                              edge=edge))
    return out


def _resampled(row: dict, idx) -> dict:
    """``row`` recomputed on the tuning prompts ``idx`` (a bootstrap resample): score, pooled perplexities,
    distinct-2; the KL budget does not depend on the prompts."""
    import numpy as np

    out = dict(row)
    out["score"] = float(np.mean(np.asarray(row["scores"])[idx]))
    out["distinct2"] = float(np.mean(np.asarray(row["distinct2s"])[idx]))
    for key, nll, tok in (("perplexity", "nll", "n_tokens"), ("fluency_ppl", "fluency_nll", "fluency_tokens")):
        if row.get(nll) is not None:
            t = float(np.sum(np.asarray(row[tok])[idx]))
            out[key] = math.exp(float(np.sum(np.asarray(row[nll])[idx])) / t) if t else math.nan
    return out


def choice_stability(tuning: list[dict], choices: list[Choice], fluency: str = FLUENCY,
                     distinct_guard: float = DISTINCT_GUARD, n_boot: int = 200, seed: int = 0,
                     size: int | None = None) -> dict:
    """How reliably the tuning split chooses: per ``(concept, method, budget)``, the share of ``n_boot`` bootstrap
    resamples of the tuning prompts (the same resample for every row of a concept) whose choice is the same layer
    and strength (or, for a budget not reached, also not reached). ``size``: prompts per resample (default: as
    many as the split has; fewer shows how stability grows with the split's size)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = [r for r in tuning if _ok(r) and "scores" in r]
    by_concept: dict[str, list[dict]] = {}
    for r in rows:
        by_concept.setdefault(r["concept"], []).append(r)
    want = {(c.concept, c.method, c.budget): (c.layer, c.strength) for c in choices}
    budgets = sorted({c.budget for c in choices})
    same = dict.fromkeys(want, 0)
    for concept, rs in by_concept.items():
        n = len(rs[0]["scores"])
        for _ in range(n_boot):
            idx = rng.integers(0, n, size or n)
            for c in choose([_resampled(r, idx) for r in rs], budgets, distinct_guard, fluency):
                k = (c.concept, c.method, c.budget)
                same[k] = same.get(k, 0) + ((c.layer, c.strength) == want.get(k))
    return {k: v / n_boot for k, v in same.items() if k[0] in by_concept}


def extend_grid(tuning: list[dict], budgets: Sequence[float], fluency: str = FLUENCY) -> list[tuple]:
    """The strengths to add so that every budget is bracketed per concept, method and layer: a strength within
    it and one beyond it. ``[(concept, method, layer, strength)]``: double the largest strength tried while it
    is still within the largest budget, halve the smallest while it is beyond the smallest budget; nothing for
    a line whose largest strength could not be reached (the vector's limit)."""
    unsteered = {r["concept"]: r for r in tuning if _ok(r) and float(r["multiplier"]) == 0}
    lines: dict[tuple, list[dict]] = {}
    for r in tuning:
        if r is not None and float(r["multiplier"]) != 0 and get_method(r["method"]).steers:
            lines.setdefault((r["concept"], r["method"], int(r["layer"])), []).append(r)
    add = []
    for (concept, method, layer), rows in lines.items():
        u = unsteered.get(concept)
        ok = sorted((float(r["multiplier"]), fluency_value(r, u, fluency)) for r in rows if _ok(r))
        if u is None or not ok or any("skipped" in r for r in rows):
            continue  # a strength beyond the vector's reach: the grid cannot go further up
        (s_lo, v_lo), (s_hi, v_hi) = ok[0], ok[-1]
        if v_hi <= max(budgets):
            add.append((concept, method, layer, round(s_hi * 2, 6)))
        if v_lo > min(budgets):
            add.append((concept, method, layer, round(s_lo / 2, 6)))
    return add


def tune(model=None, saes: dict | None = None, concepts: Sequence[str] = (), methods: Sequence[str] = METHODS,
         layers: Sequence[int] | None = None, strengths: Sequence[float] = STRENGTHS,
         budgets: Sequence[float] | None = None, n_tune: int = N_TUNE, max_new_tokens: int = 16, seed: int = 0,
         out=None, method_settings: dict | None = None, distinct_guard: float = DISTINCT_GUARD, executor=None,
         progress: bool = True, model_name: str = "gemma-3-270m", dtype: str = "float32", batch_size: int = 128,
         fluency: str = FLUENCY, extend: int = MAX_EXTEND) -> tuple[list[dict], list[Choice], Grid]:
    """Steps 1 and 2 of the benchmark (see the module docstring and :func:`bench` for the arguments): the
    tuning rows (also written to ``out``), the choices per concept, method and budget, and the tuning grid."""
    from ..checks import positive_int
    from ..concepts import shipped_concepts
    from ..evaluation.fluency import get_measure

    for name, n in (("n_tune", n_tune), ("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        positive_int(n, name)
    concepts = list(concepts) or sorted(shipped_concepts())
    saes = dict(saes or {})
    names = {x: s for x, s in saes.items() if isinstance(s, str)}
    loaded = {x: s for x, s in saes.items() if not isinstance(s, str)}
    layers = sorted(layers or saes)
    get_measure(fluency)
    budgets = tuple(budgets_of(fluency) if budgets is None else budgets)
    if not layers:
        raise ValueError("no layers: give saes={layer: SAE} (the sparse methods need them) or layers=[...]")
    bad = [b for b in budgets if not b > (0 if fluency == "kl" else 1)]
    if bad:
        raise ValueError(f"a {fluency} budget is " + ("a KL in nats above 0 (e.g. 0.1)" if fluency == "kl" else
                                                       "a ratio to unsteered above 1 (e.g. 1.5)") + f", not {bad[0]}")
    if any(not s > 0 for s in strengths):
        raise ValueError(f"strengths are relative edit sizes > 0 (e.g. 0.1, 0.2), not {list(strengths)}")
    mults = {m: ([0.0, 1.0] if not get_method(m).steers else [0.0, *map(float, strengths)]) for m in methods}
    if model is not None:
        model_name, dtype = model.cfg.model_name, str(model.cfg.dtype).removeprefix("torch.")
    tune = Grid("concept", concepts, list(methods), layers, mults, model_name, dtype, saes=names,
                method_settings=dict(method_settings or {}),
                eval_settings={"split": "tuning", "n_prompts": n_tune, **_common(n_tune, max_new_tokens, seed,
                                                                                 batch_size, fluency, kl=False)})
    with hold(out):
        tuning = run_grid(tune, out, model, loaded or None, executor=executor, progress=progress)
        conds = tune.conditions()
        for _ in range(extend):
            more = [Condition(*x) for x in extend_grid(tuning, budgets, fluency)]
            more = [c for c in more if c not in set(conds)]
            if not more:
                break
            conds += more
            tuning = run_grid(tune, out, model, loaded or None, executor=executor, progress=progress, conditions=conds)
    tuning = [r for r in tuning if r is not None]
    return tuning, choose(tuning, budgets, distinct_guard, fluency), tune


def _common(n_tune, max_new_tokens, seed, batch_size, fluency, kl: bool = True) -> dict:
    """The evaluation settings both splits share. ``kl``: also measure the KL budget (it does not depend on the
    prompts: the test split's conditions record it for the report; the tuning split only when it is the budget,
    where it would cost about 15% of the tuning time)."""
    return dict(max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, n_calibration=n_tune,
                fluency=sorted({"kl", fluency} - {"perplexity"} if kl else {fluency} - {"perplexity"}))


def bench(model=None, saes: dict | None = None, concepts: Sequence[str] = (), methods: Sequence[str] = METHODS,
          layers: Sequence[int] | None = None, strengths: Sequence[float] = STRENGTHS,
          budgets: Sequence[float] | None = None, n_tune: int = N_TUNE, n_test: int = N_TEST,
          max_new_tokens: int = 16, seed: int = 0, out=None, method_settings: dict | None = None,
          distinct_guard: float = DISTINCT_GUARD, executor=None, progress: bool = True,
          model_name: str = "gemma-3-270m", dtype: str = "float32", batch_size: int = 128,
          fluency: str = FLUENCY, extend: int = MAX_EXTEND) -> BenchResult:
    """Run the benchmark (see the module docstring); rows go to ``out`` (JSONL) as they finish.

    ``saes``: {layer: SAE or name} for the sparse methods; ``layers``: where the dense methods run (default: the
    SAE layers, so every method steers the same layers). ``concepts``: shipped names or concept files (default:
    every shipped concept). ``fluency``: the budget's measure (``perplexity``, ``smollm2``, ``kl``; every row
    also records the others); ``budgets``: in its units (default: :func:`budgets_of`). ``extend``: rounds of
    grid extension (:func:`extend_grid`). A concept whose test split has fewer than ``n_test`` prompts uses all
    of them (with a warning).
    """
    from ..checks import positive_int
    from ..concepts import get_concept, shipped_concepts, steering_prompts

    positive_int(n_test, "n_test")
    concepts = list(concepts) or sorted(shipped_concepts())
    for c in concepts:
        have = len(steering_prompts(get_concept(c), "test"))
        if have < n_test:
            warnings.warn(f"concept {c!r} has {have} test prompts, fewer than n_test={n_test}: using all {have}")
    loaded = {x: s for x, s in (saes or {}).items() if not isinstance(s, str)}
    with hold(out):  # tuning and test: another run cannot take the file between them
        tuning, choices, tune_grid = tune(model, saes, concepts, methods, layers, strengths, budgets, n_tune,
                                          max_new_tokens, seed, out, method_settings, distinct_guard, executor,
                                          progress, model_name, dtype, batch_size, fluency, extend)
        budgets = tuple(budgets_of(fluency) if budgets is None else budgets)
        layers, model_name, dtype = tune_grid.layers, tune_grid.model, tune_grid.dtype
        test = Grid("concept", concepts, list(methods), layers, tune_grid.multipliers, model_name, dtype,
                    saes=dict(tune_grid.saes), method_settings=dict(method_settings or {}),
                    eval_settings={"split": "test", "n_prompts": n_test,
                                   **_common(n_tune, max_new_tokens, seed, batch_size, fluency)})
        todo = sorted({Condition(c.concept, c.method, c.layer, c.strength) for c in choices if c.reached})
        todo += [Condition(c, methods[0], test.layers_for(methods[0])[0], 0.0) for c in concepts]  # unsteered
        tested = run_grid(test, out, model, loaded or None, executor=executor, progress=progress, conditions=todo)
    return BenchResult(tuning, [r for r in tested if r is not None], choices, budgets,
                       {"n_tune": n_tune, "n_test": n_test, "strengths": sorted({float(r["multiplier"]) for r in tuning
                                                                                if float(r["multiplier"]) > 0
                                                                                and r["method"] != "prompt"}),
                        "layers": layers, "max_new_tokens": max_new_tokens, "seed": seed,
                        "distinct_guard": distinct_guard, "fluency": fluency,
                        "methods": list(methods), "concepts": concepts, "model": model_name, "dtype": dtype,
                        "out": str(out) if out else None}, grid=test)


def texts_of(out, row: dict) -> list[str] | None:
    """The continuations of a result ``row`` from the texts file beside ``out``."""
    path = Path(out)
    path = path.with_name(path.stem + ".texts.jsonl")
    keys = ("method", "concept", "layer", "multiplier", "split", "seed", "max_new_tokens")
    for t in reversed(read_rows(path)):
        if all(t.get(k) == row.get(k) for k in keys) and len(t["texts"]) == row.get("n"):
            return t["texts"]
    return None


def judge_rows(result: BenchResult, judge, out) -> list[dict]:
    """Rate every test continuation with an LM ``judge`` (:class:`sas.evaluation.judge.Judge`, AxBench's three
    prompts); one row per test condition with the per-prompt aggregates and their mean and interval, appended to
    ``<out>.judge.jsonl`` (the judge's own cache makes a rerun send nothing)."""
    from ..concepts import get_concept
    from ..evaluation.stats import bootstrap_ci
    from .items import ConceptItem
    from .store import append_row

    if out is None:
        raise ValueError("the judge reads the continuations from the results file: give out=...")
    path = Path(out).with_name(Path(out).stem + ".judge.jsonl")
    done = {_judge_key(r): r for r in read_rows(path) if r.get("judge_model") == judge.model}
    rows = []
    for row in result.test:
        if "skipped" in row:
            continue
        if _judge_key(row) in done:
            rows.append(done[_judge_key(row)])
            continue
        texts = texts_of(out, row)
        if texts is None:
            continue  # an unsteered row reused from another method's run: its texts are under that key
        concept = get_concept(row["concept"])
        prompts = ConceptItem(row["concept"], "test", row["n_prompts"]).prompts
        rated = judge.judge(concept.description or concept.name, prompts, texts)
        agg = [r["aggregate"] for r in rated]
        lo, hi = bootstrap_ci(agg)
        j = {k: row[k] for k in _JUDGE_KEY}
        j.update({"judge_model": judge.model, "judge": sum(agg) / len(agg), "judge_lo": lo, "judge_hi": hi,
                  "judge_scores": agg, **{f"judge_{k}": sum(r[k] for r in rated) / len(rated)
                                          for k in ("concept", "instruction", "fluency")}})
        append_row(path, j)
        rows.append(j)
    result.judged = rows
    return rows


_JUDGE_KEY = ("method", "concept", "layer", "multiplier", "split", "n_prompts", "seed", "max_new_tokens", "model",
              "dtype")


def _judge_key(row: dict) -> tuple:
    return tuple(str(row.get(k)) for k in _JUDGE_KEY)
