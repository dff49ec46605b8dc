"""``sas compose``: two steering vectors at once, measured against each alone.

    result = compose(model, {5: "gemma-3-270m-L5-4k", 9: "gemma-3-270m-L9-4k"},
                     pairs=["sentiment-positive+weddings"], out="results/compose.jsonl")
    records = composition_table(result)  # per pair and setup: scores together vs alone, fluency, overlap

Protocol (one results file, resumable):

1. **Strengths.** Per concept, method and layer, the strength that the tuning split chose for the vector alone at
   the fluency ``budget`` (:func:`sas.runs.bench.tune` and :func:`~sas.runs.bench.choose` on that layer's rows),
   or the same choice on the tuning rows of an earlier ``sas bench`` file (``tuning=``; rows made from other
   concept data, SAEs or method settings are not found there, which is an error).
2. **Test.** One set of test prompts for the whole run (test-split prompts that mention none of its concepts),
   prompt ``i`` sampled with seed ``seed + i`` under every condition: unsteered, each vector alone, and each
   pair's two vectors in one :func:`sas.steer` block, each at its own layer. Every continuation is scored by
   every concept of the run, so all conditions are paired prompt by prompt.
3. **Per pair and setup** (:func:`composition_table`): each concept's score together minus alone, the perplexity
   together over each alone, with paired bootstrap intervals, and the :func:`overlap` of the two vectors.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..evaluation.stats import bootstrap_stat, paired_diff_ci
from ..hashing import text_hash
from .bench import MAX_EXTEND, STRENGTHS, choose, tune
from .grid import Condition, Grid, Runner
from .store import ResultStore, append_row, hold, read_rows

BUDGET = 1.5  # perplexity over the unsteered model's, on the tuning split
N_TUNE, N_TEST = 24, 100


@dataclass(frozen=True)
class Setup:
    """How a pair ``A+B`` is steered: A's vector of ``method_a`` at ``layer_a``, B's of ``method_b`` at
    ``layer_b``. Written ``caa@5+sas@9``."""

    method_a: str
    layer_a: int
    method_b: str
    layer_b: int

    @classmethod
    def parse(cls, text: str) -> "Setup":
        try:
            (ma, la), (mb, lb) = (part.split("@") for part in text.split("+"))
            return cls(ma.strip(), int(la), mb.strip(), int(lb))
        except ValueError:
            raise ValueError(f"a setup is METHOD@LAYER+METHOD@LAYER (e.g. caa@5+sas@9), not {text!r}") from None

    @property
    def name(self) -> str:
        return f"{self.method_a}@{self.layer_a}+{self.method_b}@{self.layer_b}"


# dense, sparse and mixed pairs, at one layer and at two
SETUPS = tuple(map(Setup.parse, ("caa@5+caa@5", "sas@5+sas@5", "caa@5+sas@5", "caa@5+caa@9", "sas@5+sas@9",
                                 "caa@5+sas@9")))


def parse_pair(pair) -> tuple[str, str]:
    """``"A+B"`` or ``(A, B)`` as ``(A, B)``: two different concepts."""
    parts = pair.split("+") if isinstance(pair, str) else list(pair)
    if len(parts) != 2:
        raise ValueError(f"a pair is two concepts, A+B (e.g. sentiment-positive+weddings), not {pair!r}")
    a, b = (p.strip() for p in parts)
    if a == b:
        raise ValueError(f"a pair needs two different concepts, not {a!r} twice")
    return a, b


@torch.no_grad()
def overlap(vec_a, layer_a: int, vec_b, layer_b: int) -> dict:
    """How much two vectors' edits overlap: ``cosine`` of their dense directions (a sparse vector's is its
    decoded direction ``W_dec^T v``); for two sparse vectors in the same SAE, the ``shared_features`` (ids, by
    the smaller of the two |weights|, largest first), how many there are, how many have the same sign, and the
    share of each vector's L1 weight on them. ``layers``: ``"same"``, or ``"different"`` when the edits act at
    different layers (no layer overlaps; features of different SAEs cannot be shared)."""
    def dense(vec, layer):
        d = vec.to_dense().tensor(layer).float()
        return d.sum(0) if d.ndim == 2 else d  # ActAdd's position-aligned rows: their sum

    a, b = dense(vec_a, layer_a), dense(vec_b, layer_b)
    out = {"layers": "same" if layer_a == layer_b else "different",
           "cosine": torch.nn.functional.cosine_similarity(a, b, dim=0).item()}
    sparse = [getattr(v, "kind", "dense") == "sparse" for v in (vec_a, vec_b)]
    if not all(sparse):
        out["features"] = "one vector is dense: no features to share" if any(sparse) else None
        return out
    if layer_a != layer_b or vec_a.sae_names.get(layer_a) != vec_b.sae_names.get(layer_b):
        out["features"] = (f"different SAEs ({vec_a.sae_names.get(layer_a)} at layer {layer_a}, "
                           f"{vec_b.sae_names.get(layer_b)} at layer {layer_b}): no feature can be shared")
        return out
    ca, cb = vec_a.codes[layer_a].float(), vec_b.codes[layer_b].float()
    both = ((ca != 0) & (cb != 0)).nonzero()[:, 0]
    weight = torch.minimum(ca[both].abs(), cb[both].abs())
    shared = both[weight.argsort(descending=True)]
    out.update(shared_features=shared.tolist(), n_shared=len(shared), n_a=int((ca != 0).sum()),
               n_b=int((cb != 0).sum()), same_sign=int((ca[shared].sign() == cb[shared].sign()).sum()),
               shared_weight_a=(ca[shared].abs().sum() / ca.abs().sum()).item(),
               shared_weight_b=(cb[shared].abs().sum() / cb.abs().sum()).item(),
               code_cosine=torch.nn.functional.cosine_similarity(ca, cb, dim=0).item())
    return out


@dataclass
class ComposeResult:
    rows: list[dict]  # one per condition: unsteered, each vector alone, each pair together
    pairs: list[tuple[str, str]]
    setups: list[Setup]
    choices: dict  # (concept, method, layer) -> the bench Choice at the budget
    settings: dict = field(default_factory=dict)


def shared_test_prompts(concepts: Sequence[str], n: int) -> list[str]:
    """The first ``n`` test-split prompts that are in every concept's test split (none mentions any of them)."""
    from ..concepts import get_concept, steering_prompts

    splits = [steering_prompts(get_concept(c), "test") for c in concepts]
    keep = set.intersection(*map(set, splits[1:])) if len(splits) > 1 else None
    prompts = [p for p in splits[0] if keep is None or p in keep]
    if len(prompts) < n:
        warnings.warn(f"the concepts {list(concepts)} share {len(prompts)} test prompts, fewer than n_test={n}: "
                      f"using all {len(prompts)}")
    return prompts[:n]


def _tuning_from_file(path, runner: Runner, concepts, methods, layers) -> list[dict]:
    """The tuning rows of an earlier ``sas bench`` file that the current data, SAEs and settings would make."""
    store = ResultStore(path, "concept")
    rows = []
    for c in concepts:
        for m in methods:
            for layer in layers:
                if m in runner.grid.methods and layer not in runner.grid.layers_for(m):
                    continue
                mults = {0.0} | {float(r["multiplier"]) for r in store.rows if r.get("split") == "tuning"
                                 and r["concept"] == c and r["method"] == m and int(r["layer"]) == layer}
                found = [store.find(runner.key(Condition(c, m, layer, s))) for s in sorted(mults)]
                if len([r for r in found if r is not None]) < 2:
                    raise ValueError(f"{path} has no tuning rows of {m} at layer {layer} for {c!r} made with the "
                                     "current concept data, SAEs, method settings and these tuning settings; run "
                                     "without tuning= (the tuning split then runs here)")
                rows += [r for r in found if r is not None]
    return rows


def compose(model=None, saes: dict | None = None, pairs: Sequence = (), setups: Sequence = SETUPS,
            budget: float = BUDGET, tuning=None, n_tune: int = N_TUNE, n_test: int = N_TEST,
            max_new_tokens: int = 16, seed: int = 0, out=None, strengths: Sequence[float] = STRENGTHS,
            extend: int = MAX_EXTEND, batch_size: int = 128, progress: bool = True,
            model_name: str = "gemma-3-270m", dtype: str = "float32", run: bool = True) -> ComposeResult:
    """Run the protocol of the module docstring; rows go to ``out`` (JSONL) as they finish, and a rerun resumes.

    ``pairs``: ``"A+B"`` strings (shipped concept names or files); ``setups``: :class:`Setup` values or strings
    like ``"caa@5+sas@9"`` (default :data:`SETUPS`); ``saes``: {layer: SAE or name} for the sparse methods'
    layers; ``budget``: the perplexity ratio to unsteered the strengths were chosen at; ``tuning``: an earlier
    ``sas bench`` results file whose tuning rows to choose from (else the tuning split runs here, into
    ``<out>.tuning.jsonl``, with ``n_tune``, ``strengths`` and ``extend`` as in :func:`sas.runs.bench.bench`).
    ``run=False``: generate nothing, only read the rows already in ``out`` (the report of a partial run; with
    ``tuning=`` and SAEs by name, the model is not loaded).
    """
    from ..checks import positive_int
    from ..concepts import get_concept
    from ..methods.registry import get_method

    for name, n in (("n_tune", n_tune), ("n_test", n_test), ("max_new_tokens", max_new_tokens)):
        positive_int(n, name)
    pairs = [parse_pair(p) for p in pairs]
    setups = [s if isinstance(s, Setup) else Setup.parse(s) for s in setups]
    if not pairs or not setups:
        raise ValueError("give at least one pair (e.g. 'sentiment-positive+weddings') and one setup")
    if not budget > 1:
        raise ValueError(f"the budget is a perplexity ratio to unsteered above 1 (e.g. 1.5), not {budget}")
    concepts = list(dict.fromkeys(c for p in pairs for c in p))
    [get_concept(c) for c in concepts]  # an unknown concept fails before the model loads
    methods = list(dict.fromkeys(m for s in setups for m in (s.method_a, s.method_b)))
    layers = sorted({x for s in setups for x in (s.layer_a, s.layer_b)})
    saes = dict(saes or {})
    for s in setups:
        for m, layer in ((s.method_a, s.layer_a), (s.method_b, s.layer_b)):
            if not get_method(m).steers:
                raise ValueError(f"{m} edits no activations (a prompting baseline): it cannot be composed")
            if get_method(m).needs_sae and layer not in saes:
                raise ValueError(f"setup {s.name} steers {m} at layer {layer} but no SAE is given there; "
                                 f"give saes={{{layer}: ...}} (SAEs given at layers {sorted(saes)})")
    names = {x: v for x, v in saes.items() if isinstance(v, str)}
    loaded = {x: v for x, v in saes.items() if not isinstance(v, str)}
    if model is not None:
        model_name, dtype = model.cfg.model_name, str(model.cfg.dtype).removeprefix("torch.")
    out = Path(out) if out else None
    with hold(out if run else None):  # reading rows needs no hold
        if tuning is None:
            tune_out = out.with_name(out.stem + ".tuning.jsonl") if out else None
            rows, _, grid = tune(model, saes, concepts, methods, layers, strengths, (budget,), n_tune,
                                 max_new_tokens, seed, tune_out, batch_size=batch_size, progress=progress,
                                 model_name=model_name, dtype=dtype, extend=extend)
            vector_dir = ResultStore(tune_out, "concept").vector_dir
        else:
            first = next((r for r in read_rows(tuning) if r.get("split") == "tuning" and r["concept"] in concepts),
                         None)
            if first is None:
                raise ValueError(f"{tuning} has no tuning rows of the concepts {concepts}")
            settings = {k: first[k] for k in ("n_prompts", "max_new_tokens", "seed", "n_calibration")}
            grid = Grid("concept", concepts, methods, layers, {m: [0.0] for m in methods}, model_name, dtype,
                        saes=names, eval_settings={"split": "tuning", **settings, "fluency": first.get("fluency", [])})
            vector_dir = out.with_name(out.stem + ".vectors") if out else None
        if loaded:
            from ..load.saes import sae_name

            grid.saes = {**{int(x): sae_name(v) for x, v in loaded.items()}, **grid.saes}
        runner = Runner(grid, model, loaded, vector_dir=vector_dir, progress=progress)
        if tuning is not None:
            rows = _tuning_from_file(tuning, runner, concepts, methods, layers)
        choices = {}
        for layer in layers:  # the best strength at this layer alone (bench's choice ranges over layers)
            here = [r for r in rows if int(r["layer"]) == layer or float(r["multiplier"]) == 0]
            for c in choose(here, (budget,)):
                if c.concept in concepts and c.method in methods:
                    choices[(c.concept, c.method, layer)] = c

        prompts = shared_test_prompts(concepts, n_test)
        base = {"kind": "compose", "model": grid.model, "dtype": grid.dtype, "max_new_tokens": max_new_tokens,
                "seed": seed, "budget": budget, "n_test": len(prompts),
                "prompts_hash": text_hash("\n".join(prompts)),
                "scored": {c: get_concept(c).data_hash for c in concepts}}
        done = {_norm(r["key"]): r for r in read_rows(out) if "key" in r}
        rows_by_key = {}
        for group in _groups(pairs, setups, choices):  # one generation call per pair: larger batches
            keys = [{**base, "terms": [runner.key(Condition(c, m, x, choices[(c, m, x)].strength))
                                       for c, m, x in terms]} for _, _, terms in group]
            todo = [(g, k) for g, k in zip(group, keys) if _norm(k) not in done]
            if todo and run:
                for row in _generate(runner, todo, choices, concepts, prompts, max_new_tokens, seed, batch_size):
                    append_row(out, {k: v for k, v in row.items() if k != "texts"})
                    if out is not None:
                        append_row(out.with_name(out.stem + ".texts.jsonl"), {"key": row["key"], "texts": row["texts"]})
                    done[_norm(row["key"])] = {k: v for k, v in row.items() if k != "texts"}
            rows_by_key.update({_norm(k): done[_norm(k)] for k in keys if _norm(k) in done})
        result_rows = list(rows_by_key.values())
    return ComposeResult(result_rows, pairs, setups, choices,
                         {"budget": budget, "n_test": len(prompts), "max_new_tokens": max_new_tokens, "seed": seed,
                          "model": grid.model, "dtype": grid.dtype, "saes": dict(grid.saes),
                          "n_tune": grid.eval_settings.get("n_prompts"), "tuning": str(tuning) if tuning else None,
                          "out": str(out) if out else None})


def _norm(key: dict) -> str:
    return json.dumps(key, sort_keys=True, default=str)


def _groups(pairs, setups, choices):
    """Per pair, ``[((a, b), setup or None, terms)]``: the unsteered model (in the first group), each vector alone
    (once per run) and each setup's two vectors together; a setup whose vector reached no strength within the
    budget is left out (:func:`composition_table` says so)."""
    seen = {()}
    first = [((None, None), None, ())]
    for a, b in pairs:
        group, first = first, []
        for s in setups:
            ta, tb = (a, s.method_a, s.layer_a), (b, s.method_b, s.layer_b)
            if not all(choices.get(t) is not None and choices[t].reached for t in (ta, tb)):
                continue
            for t in ((ta,), (tb,)):
                if t not in seen:
                    seen.add(t)
                    group.append(((a, b), None, t))
            group.append(((a, b), s, (ta, tb)))
        yield group


def _generate(runner, todo, choices, concepts, prompts, max_new_tokens, seed, batch_size) -> list[dict]:
    """The rows of the conditions ``todo`` (``[((pair, setup, terms), key)]``), generated in one call: every
    vector they use steers its own layer, at its chosen strength in the rows of the conditions that use it and
    0 elsewhere; every continuation is scored by every concept."""
    from ..concepts import get_concept
    from ..evaluation.concept import evaluate_concept
    from ..steering.steer import recording

    used = list(dict.fromkeys(t for (_, _, terms), _ in todo for t in terms))
    vecs = {t: runner.vector(t[0], t[1]) for t in used}
    raws = {}
    for t in used:
        raw = runner.items[t[0]].raw_multipliers(runner.model, vecs[t], t[2], [choices[t].strength])[0]
        if isinstance(raw, Exception):
            raise raw
        raws[t] = raw
    mults = [tuple(raws[t] if t in terms else 0.0 for t in used) or (0.0,) for (_, _, terms), _ in todo]
    with recording() as receipt:
        done = evaluate_concept(runner.model, get_concept(concepts[0]), prompts, [vecs[t] for t in used] or None,
                                [t[2] for t in used], mults, max_new_tokens=max_new_tokens, seed=seed,
                                batch_size=batch_size)
    edited = receipt.layers()
    missing = sorted({t[2] for t in used if not edited.get(str(t[2]), {}).get("positions")})
    if missing:
        raise RuntimeError(f"steering with {used} edited nothing at layer(s) {missing}")
    rows = []
    for (((a, b), s, terms), key), (res, texts) in zip(todo, done):
        row = {"key": key, "pair": f"{a}+{b}" if s else None, "setup": s.name if s else None,
               "terms": [{"concept": t[0], "method": t[1], "layer": t[2], "strength": choices[t].strength,
                          "raw_multiplier": raws[t], "kind": getattr(vecs[t], "kind", "dense")} for t in terms],
               "nll": res["nll"], "n_tokens": res["n_tokens"], "distinct2s": res["distinct2s"],
               "perplexity": res["perplexity"], "seconds": res["seconds"], "texts": texts,
               "receipt": {str(t[2]): edited[str(t[2])] for t in terms}}  # of the call: conditions share batches
        for c in concepts:
            scorer = get_concept(c).scorer()
            details = scorer.details(texts)
            row.setdefault("scores", {})[c] = details[scorer.primary]
            row.setdefault("continuous", {})[c] = details[scorer.continuous]
        if len(terms) == 2:
            row["overlap"] = overlap(vecs[terms[0]], terms[0][2], vecs[terms[1]], terms[1][2])
        rows.append(row)
    return rows


def _by_terms(result: ComposeResult) -> dict:
    return {tuple((t["concept"], t["method"], t["layer"]) for t in r["terms"]): r for r in result.rows}


def _log_ppl(row, idx) -> float:
    return float(np.sum(np.asarray(row["nll"])[idx]) / max(np.sum(np.asarray(row["n_tokens"])[idx]), 1))


def _ppl_ratio(num: dict, den: dict, seed: int = 0) -> tuple[float, float, float]:
    """Pooled perplexity of ``num`` over ``den`` (the same prompts) and its paired bootstrap interval."""
    return bootstrap_stat(lambda idx: float(np.exp(_log_ppl(num, idx) - _log_ppl(den, idx))), len(num["nll"]),
                          seed=seed)


def composition_table(result: ComposeResult) -> list[dict]:
    """One record per pair and setup: per concept (``a``, ``b``) the strength, the unsteered, alone and together
    scores and the paired difference together minus alone with its 95% interval; the perplexity ratio to
    unsteered together, and together over each alone (with intervals); the :func:`overlap`. A setup whose
    vector reached no strength within the budget has ``why``."""
    rows = _by_terms(result)
    uns = rows.get(())
    out = []
    for a, b in result.pairs:
        for s in result.setups:
            ta, tb = (a, s.method_a, s.layer_a), (b, s.method_b, s.layer_b)
            rec = {"pair": f"{a}+{b}", "setup": s.name, "kind": _kind(result, s),
                   "layers": "same" if s.layer_a == s.layer_b else "different", "a": a, "b": b}
            missing = [t for t in (ta, tb) if not result.choices.get(t) or not result.choices[t].reached]
            if missing:
                c = result.choices.get(missing[0])
                rec["why"] = f"not reached: {missing[0][1]} at layer {missing[0][2]} for {missing[0][0]}: " + \
                    (c.why if c else "no tuning rows")
                out.append(rec)
                continue
            tog = rows.get((ta, tb))
            if tog is None or uns is None:
                rec["why"] = "not run yet"
                out.append(rec)
                continue
            for role, t in (("a", ta), ("b", tb)):
                alone, concept = rows[(t,)], t[0]
                d, lo, hi = paired_diff_ci(tog["scores"][concept], alone["scores"][concept])
                rec.update({f"{role}_strength": result.choices[t].strength,
                            f"{role}_unsteered": float(np.mean(uns["scores"][concept])),
                            f"{role}_alone": float(np.mean(alone["scores"][concept])),
                            f"{role}_together": float(np.mean(tog["scores"][concept])),
                            f"{role}_diff": d, f"{role}_diff_lo": lo, f"{role}_diff_hi": hi})
                r, lo, hi = _ppl_ratio(tog, alone)
                rec.update({f"ppl_vs_{role}": r, f"ppl_vs_{role}_lo": lo, f"ppl_vs_{role}_hi": hi,
                            f"ppl_{role}_alone": _ppl_ratio(alone, uns)[0]})
            rec["ppl_together"], rec["ppl_together_lo"], rec["ppl_together_hi"] = _ppl_ratio(tog, uns)
            rec["overlap"] = tog.get("overlap")
            out.append(rec)
    return out


def _kind(result: ComposeResult, s: Setup) -> str:
    """``dense``, ``sparse`` or ``mixed``: the kinds of the setup's vectors, as the run built them."""
    kinds = {t["method"]: t.get("kind", "dense") for r in result.rows for t in r["terms"]}
    sparse = [kinds.get(m) == "sparse" for m in (s.method_a, s.method_b)]
    return "sparse" if all(sparse) else "mixed" if any(sparse) else "dense"


def retained(result: ComposeResult, setup: Setup, seed: int = 0) -> tuple[float, float, float]:
    """The share of the alone effects a setup keeps together, pooled over its pairs and both concepts:
    ``sum(together - unsteered) / sum(alone - unsteered)`` of the concepts' scores, with a bootstrap interval
    (the prompts resampled, every condition together). NaN when no pair of the setup ran."""
    return _retained(result, [setup], seed)


def _retained_parts(result, setup):
    rows = _by_terms(result)
    uns = rows.get(())
    parts = []
    for a, b in result.pairs:
        ta, tb = (a, setup.method_a, setup.layer_a), (b, setup.method_b, setup.layer_b)
        tog = rows.get((ta, tb))
        if tog is None or uns is None:
            continue
        for t in (ta, tb):
            c = t[0]
            parts.append((np.asarray(tog["scores"][c]), np.asarray(rows[(t,)]["scores"][c]),
                          np.asarray(uns["scores"][c])))
    return parts


def _retained(result, setups, seed=0, minus=None):
    parts = [p for s in setups for p in _retained_parts(result, s)]
    other = [p for s in (minus or []) for p in _retained_parts(result, s)]
    if not parts or (minus and not other):
        return float("nan"), float("nan"), float("nan")

    def share(ps, idx):
        num = sum(float(t[idx].mean() - u[idx].mean()) for t, _, u in ps)
        den = sum(float(a[idx].mean() - u[idx].mean()) for _, a, u in ps)
        return num / den if den else float("nan")

    n = len(parts[0][0])
    return bootstrap_stat(lambda idx: share(parts, idx) - (share(other, idx) if minus else 0.0), n, seed=seed)


def mean_change(result: ComposeResult, setup: Setup, role: str, seed: int = 0) -> tuple[float, float, float]:
    """The mean over a setup's pairs of concept ``role``'s (``"a"`` or ``"b"``) score together minus alone, with a
    bootstrap interval (the prompts resampled, every condition together). NaN when no pair of the setup ran."""
    rows = _by_terms(result)
    parts = []
    for a, b in result.pairs:
        t = (a, setup.method_a, setup.layer_a) if role == "a" else (b, setup.method_b, setup.layer_b)
        tog = rows.get(((a, setup.method_a, setup.layer_a), (b, setup.method_b, setup.layer_b)))
        if tog is not None:
            parts.append(np.asarray(tog["scores"][t[0]]) - np.asarray(rows[(t,)]["scores"][t[0]]))
    if not parts:
        return float("nan"), float("nan"), float("nan")
    return bootstrap_stat(lambda idx: float(np.mean([p[idx].mean() for p in parts])), len(parts[0]), seed=seed)


def sparse_vs_dense(result: ComposeResult, seed: int = 0) -> list[dict]:
    """Per placement (same layer, or two layers), the share retained by the sparse setup minus the dense one's
    (:func:`retained`), with a bootstrap interval: above 0, the sparse vectors compose better."""
    out = []
    for sp in (s for s in result.setups if _kind(result, s) == "sparse"):
        for de in (s for s in result.setups if _kind(result, s) == "dense"):
            if (sp.layer_a, sp.layer_b) == (de.layer_a, de.layer_b):
                d, lo, hi = _retained(result, [sp], seed, minus=[de])
                out.append({"sparse": sp.name, "dense": de.name, "diff": d, "lo": lo, "hi": hi})
    return out
