"""One grid runner for every experiment: conditions ``(item, method, layer, multiplier)``, evaluated where the
model is, written to a :class:`~sas.runs.store.ResultStore` as they finish, and resumed by their full key.

    grid = Grid("task", items=["sentiment"], methods=["caa", "sas"], layers=[5, 9],   # kinds: sas.runs.items.ITEMS
                multipliers={"caa": [-2, 0, 2], "sas": [-8, 0, 8]}, saes={5: "gemma-3-270m-L5-4k", 9: ...})
    rows = run_grid(grid, out="results/x.jsonl")          # serial; executor= runs shards elsewhere (Ray)

Policy, the same for sweeps, comparisons and benchmarks: a vector is built once per item and method for all
its layers (from the item's contrastive data, whose activations every method shares); the unsteered
condition (multiplier 0) is evaluated once per item and its row reused for every method and layer; side
effects, when asked for, are measured for every condition.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..hashing import json_hash, tensor_hash
from ..methods.registry import build_vector, get_method, method_settings, methods
from ..methods.sas import NoFeatures
from ..steering.steer import recording
from .items import make_item
from .store import ResultStore, hold


@dataclass(frozen=True, order=True)
class Condition:
    """One row of results."""

    item: str  # behaviour or task
    method: str  # a registered method
    layer: int
    multiplier: float


@dataclass
class Grid:
    """A plain, picklable spec of a run: everything a worker needs to rebuild the work."""

    kind: str  # a key of sas.runs.items.ITEMS: "ab" (A/B behaviours), "task" or "concept" (open-ended, one concept)
    items: list[str]
    methods: list[str]
    layers: list[int]
    multipliers: dict[str, list[float]] = field(default_factory=dict)  # per method; default: the method's own
    model: str = "gemma-3-270m"
    dtype: str = "float32"
    saes: dict[int, str] = field(default_factory=dict)  # layer -> SAE name or folder, for sparse methods
    method_settings: dict[str, dict] = field(default_factory=dict)  # method -> settings (e.g. {"sas": {"tau": 0.2}})
    eval_settings: dict = field(default_factory=dict)  # n_test, balance, seed, n_prompts, max_new_tokens, side_effects
    vector_dir: str | None = None  # where built vectors are cached (run_grid sets the results file's), for workers too

    def __post_init__(self):
        make = [make_item(self.kind, i, self.eval_settings) for i in self.items]  # checks names and settings
        del make
        for m in self.methods:
            if not get_method(m).steers and self.kind != "concept":
                raise ValueError(f"method {m!r} is a prompting baseline: it runs on benchmark concepts (sas bench), "
                                 f"not on {self.kind} items")
            method_settings(m, self.method_settings.get(m))
        unknown = set(self.multipliers) - set(self.methods)
        if unknown:
            raise ValueError(f"multipliers given for method(s) {sorted(unknown)} that the grid does not run")
        self.multipliers = {m: [float(x) for x in self.multipliers.get(m, get_method(m).multipliers)]
                            for m in self.methods}
        self.layers = sorted({int(x) for x in self.layers})
        self.saes = {int(k): v for k, v in self.saes.items()}

    def layers_for(self, method: str) -> list[int]:
        """The layers ``method`` runs at: all, for a sparse method those with an SAE, for a baseline that steers
        no layer (prompting) only :data:`~sas.methods.prompt.PROMPT_LAYER`."""
        if not get_method(method).steers:
            from ..methods.prompt import PROMPT_LAYER

            return [PROMPT_LAYER]
        if get_method(method).needs_sae:
            return [x for x in self.layers if x in self.saes]
        return self.layers

    def conditions(self) -> list[Condition]:
        return [Condition(i, m, x, s) for i in self.items for m in self.methods for x in self.layers_for(m)
                for s in self.multipliers[m]]

    @staticmethod
    def shards(conditions: list[Condition], n: int) -> list[list[Condition]]:
        """Split into at most ``n`` shards, keeping each (item, method) together (one vector build each)."""
        groups = defaultdict(list)
        for c in conditions:
            groups[(c.item, c.method)].append(c)
        shards = [[] for _ in range(max(1, min(n, len(groups))))]
        for g in sorted(groups.values(), key=len, reverse=True):  # largest first onto the lightest shard
            min(shards, key=len).extend(g)
        return [s for s in shards if s]

    def to_dict(self) -> dict:
        return asdict(self)


# settings of a row that its vector does not depend on (how it is evaluated, not how it is built): the cache of
# built vectors ignores them, so both splits of a benchmark, and a rerun with more prompts, share each vector
VECTOR_FREE = ("layer", "multiplier", "n_test", "n_prompts", "max_new_tokens", "side_effects", "split",
               "n_calibration", "fluency")


class Runner:
    """Evaluates conditions of ``grid`` where the model is. ``model`` and ``saes`` ({layer: SAE}) are loaded from
    the grid's names when not given; ``vectors`` may give prebuilt vectors by item (or by (item, method))."""

    def __init__(self, grid: Grid, model=None, saes: dict | None = None, vectors: dict | None = None,
                 vector_dir=None, progress: bool = True):
        self.grid, self._model, self._saes = grid, model, dict(saes or {})
        if vector_dir is None and grid.vector_dir:
            vector_dir = Path(grid.vector_dir)
        self.vectors, self.vector_dir, self.progress = dict(vectors or {}), vector_dir, progress
        self.items = {i: make_item(grid.kind, i, grid.eval_settings) for i in grid.items}
        self.unsteered: dict[str, dict] = {}  # item -> results of the unsteered model
        self._built: dict[tuple, object] = {}
        self._sae_ids: dict[int, tuple[str, str]] = {}

    # what is loaded lazily: a finished run never loads the model
    @property
    def model(self):
        if self._model is None:
            from ..load.models import load_model

            self._model = load_model(self.grid.model, dtype=self.grid.dtype)
        return self._model

    def sae(self, layer: int):
        if layer not in self._saes:
            from ..load.saes import load_sae

            self._saes[layer] = load_sae(self.grid.saes[layer], self.model)
        return self._saes[layer]

    def _sae_id(self, layer: int) -> tuple[str, str]:
        """(name, weights hash) of the SAE at ``layer``, without loading it where its card knows the hash."""
        from ..load.saes import sae_hash, sae_name, sae_sha256

        if layer not in self._sae_ids:
            if layer in self._saes:
                sae = self._saes[layer]
                self._sae_ids[layer] = (sae_name(sae), getattr(sae, "sas_sha256", None)
                                        or sae_hash(sae))
            else:
                self._sae_ids[layer] = (self.grid.saes[layer], sae_sha256(self.grid.saes[layer]))
        return self._sae_ids[layer]

    def preflight(self, conditions) -> None:
        """Raise ``FileNotFoundError`` before anything runs if a method of ``conditions`` lacks what it needs for
        its SAE (e.g. SAE-TS's effect map) to build a vector that is not cached yet, naming each missing thing and
        the command that makes it."""
        from ..steering.vector import vector_path

        def built(c):  # given, or in the results file's vector cache: nothing more is needed for it
            if self._prebuilt(c) is not None:
                return True
            path = self._cache_path(c.item, c.method, self.grid.layers_for(c.method))
            return path is not None and vector_path(path).exists()

        todo = sorted({(c.method, c.layer) for c in conditions if get_method(c.method).missing is not None
                       and get_method(c.method).needs_sae and not built(c)})
        problems = []
        for method, layer in todo:
            settings = method_settings(method, self.grid.method_settings.get(method))
            why = get_method(method).missing(self.model, self.sae(layer), **settings)
            if why:
                problems.append(f"{method} at layer {layer}: {why}")
        if problems:
            raise FileNotFoundError("nothing was run; " + "\n".join(problems))

    def _prebuilt(self, c: Condition):
        return self.vectors.get((c.item, c.method), self.vectors.get(c.item))

    def key(self, c: Condition) -> dict:
        """The resume key of ``c``: every setting that changes its row (the vector's: :func:`vector_settings`)."""
        item = self.items[c.item]
        k = {"model": self.grid.model, "dtype": self.grid.dtype, "method": c.method, item.column: c.item,
             "layer": c.layer, "multiplier": c.multiplier, **item.settings()}
        pre = self._prebuilt(c)
        if pre is not None:
            k["vector_hash"] = tensor_hash([pre.tensor(x).float() for x in pre.layers])[:16]
            return k
        k["data_hash"] = item.contrast.hash
        k.update(method_settings(c.method, self.grid.method_settings.get(c.method)))
        if get_method(c.method).needs_sae:
            k["sae"], k["sae_sha256"] = self._sae_id(c.layer)
        return k

    # vectors
    def vector(self, item_name: str, method: str):
        """The vector of ``method`` for an item at all the grid's layers for it: prebuilt, cached, or built."""
        if (item_name, method) in self._built:
            return self._built[(item_name, method)]
        pre = self.vectors.get((item_name, method), self.vectors.get(item_name))
        if pre is not None:
            self._built[(item_name, method)] = pre
            return pre
        item, layers = self.items[item_name], self.grid.layers_for(method)
        settings = method_settings(method, self.grid.method_settings.get(method))
        saes = {x: self.sae(x) for x in layers} if get_method(method).needs_sae else None
        path = self._cache_path(item_name, method, layers) if get_method(method).steers else None
        vec = self._load_cached(path, saes)
        if vec is None:
            try:
                vec = build_vector(self.model, method, item.contrast, layers, saes, item.positions, **settings)
            except NoFeatures as e:
                vec = e  # rows say why; the run goes on
            if path is not None and not isinstance(vec, Exception):
                vec.save(path)
        self._built[(item_name, method)] = vec
        return vec

    def _cache_path(self, item_name: str, method: str, layers: list[int]):
        if self.vector_dir is None:
            return None
        k = {key: v for key, v in self.key(Condition(item_name, method, layers[0], 1.0)).items()
             if key not in VECTOR_FREE}
        if get_method(method).needs_sae:
            k["sae"] = [self._sae_id(x) for x in layers]
        return self.vector_dir / f"{method}_{item_name}_{json_hash({**k, 'layers': layers}, 12)}"

    @staticmethod
    def _load_cached(path, saes):
        from ..steering.kinds import load_vector
        from ..steering.vector import vector_path

        if path is None or not vector_path(path).exists():
            return None
        try:
            return load_vector(path, saes=saes)
        except (ValueError, OSError):
            return None  # a damaged cache entry is rebuilt

    # evaluation
    @torch.no_grad()
    def extras(self, c: Condition, vec, multiplier: float | None = None) -> dict:
        """Per row: the edit's size on the item's activations, the sparse vector's feature count, and the
        cosine of its dense direction with CAA's from the same data. ``multiplier``: the vector's own multiplier
        when the condition's is in other units (a concept's relative strength)."""
        out = {"resid_change": 0.0} if c.multiplier == 0 else {}
        if isinstance(vec, Exception) or c.layer not in vec.layers or not get_method(c.method).steers:
            return out
        m = c.multiplier if multiplier is None else multiplier
        item = self.items[c.item]
        has_pairs = item.contrast.pairs is not None or item.contrast.positive is not None
        if "n_features" in vec.summary():
            out["n_features"] = vec.summary()["n_features"][c.layer]
        if vec.linear:
            out["resid_change"] = abs(m) * vec.tensor(c.layer).norm().item()
        elif has_pairs:  # the edit the vector makes on the item's activations
            pos, neg = item.contrast.activations(self.model, [c.layer])
            acts = torch.cat([pos[c.layer], neg[c.layer]])
            edit = vec.hook(c.layer, m, "all")(acts[None]) - acts[None]
            out["resid_change"] = edit.norm(dim=-1).mean().item()
        dense = vec.to_dense().directions[c.layer]
        dense = dense.sum(0) if dense.ndim == 2 else dense
        if has_pairs and c.method != "caa":
            pos, neg = item.contrast.activations(self.model, [c.layer])
            caa = pos[c.layer].mean(0) - neg[c.layer].mean(0)
            out["cos_caa"] = torch.nn.functional.cosine_similarity(dense.float(), caa.float(), dim=0).item()
        return out

    def run(self, conditions: list[Condition], on_row=None) -> list[dict]:
        """Evaluate ``conditions``; ``on_row(row, texts)`` is called as each finishes. Returns the rows.

        An item that evaluates several strengths at once (``evaluate_many``: one strength per batch row) gets all
        the steered conditions of one method and layer in one call."""
        from tqdm.auto import tqdm

        rows = []
        bar = tqdm(total=len(conditions), desc=f"{self.grid.kind} grid", disable=not self.progress)
        for group in self.groups(conditions):
            t0, cpu0 = time.time(), time.process_time()
            c0, item = group[0], self.items[group[0].item]
            vec = self.vector(c0.item, c0.method)
            vector_seconds = time.time() - t0  # building (or loading) the vector; the first group of a vector pays
            if c0.multiplier != 0 and (isinstance(vec, Exception) or c0.layer not in vec.layers):
                why = str(vec) if isinstance(vec, Exception) else vec.settings.get("skipped", {}).get(c0.layer, "")
                done = [({"skipped": f"no {c0.method} vector at layer {c0.layer}: {why}"}, None) for _ in group]
            elif c0.multiplier == 0:
                texts = None
                if c0.item not in self.unsteered:
                    self.unsteered[c0.item], texts = item.evaluate(self.model, None, 0.0, c0.layer)
                    done = [(dict(self.unsteered[c0.item]), texts)]
                else:  # reused: its time was counted where it ran
                    done = [(untimed(self.unsteered[c0.item]), texts)]
            else:
                # a strength the vector cannot reach comes back as a row that says why (ConceptItem)
                with recording() as receipt:
                    if len(group) > 1:
                        done = item.evaluate_many(self.model, vec, [c.multiplier for c in group], c0.layer)
                    else:
                        done = [item.evaluate(self.model, vec, c0.multiplier, c0.layer)]
                if get_method(c0.method).steers:  # what each condition's steering edited; no edit is an error
                    for c, (res, _) in zip(group, done):
                        if "skipped" not in res:
                            res["receipt"] = receipt.check(f"{c}", res.get("raw_multiplier", c.multiplier))
            seconds, cpu = (time.time() - t0) / len(group), (time.process_time() - cpu0) / len(group)
            for c, (res, texts) in zip(group, done):
                row = {**self.key(c), **res}
                if "skipped" not in res:  # seconds: wall; cpu_seconds: this process's CPU time, every thread
                    row.update({**self.extras(c, vec, res.get("raw_multiplier")), "seconds": seconds,
                                "cpu_seconds": cpu, "seconds_vector": vector_seconds / len(group)})
                rows.append(row)
                if on_row is not None:
                    on_row(row, texts)
                bar.update()
        bar.close()
        return rows

    def groups(self, conditions: list[Condition]) -> list[list[Condition]]:
        """Conditions one by one, except the steered ones of one (item, method, layer) of an item with
        ``evaluate_many``, which go together (in order of their first appearance)."""
        groups, index = [], {}
        for c in conditions:
            if c.multiplier != 0 and hasattr(self.items[c.item], "evaluate_many"):
                k = (c.item, c.method, c.layer)
                if k in index:
                    index[k].append(c)
                    continue
                index[k] = [c]
                groups.append(index[k])
            else:
                groups.append([c])
        return groups


VECTOR_KEYS = ("sae", "sae_sha256", "vector_hash", "data_hash")  # what Runner.key records of a vector's making
# what Runner.run adds per method and layer
EXTRAS = ("resid_change", "n_features", "cos_caa", "seconds", "cpu_seconds", "seconds_vector", "receipt")


def vector_settings(method: str | None = None) -> set[str]:
    """The key's settings that only the vector changes: ``method``'s settings (all registered methods' if None)
    and :data:`VECTOR_KEYS`. The unsteered model's results do not depend on them."""
    ms = [get_method(method)] if method else methods().values()
    return {k for m in ms for k in m.settings} | set(VECTOR_KEYS)


def unsteered_results(row: dict, key: dict) -> dict:
    """What an unsteered ``row`` measured, for a condition with ``key``: the row without the settings of any key
    (``key``'s, every method's, :data:`VECTOR_KEYS`) and without :data:`EXTRAS`."""
    drop = set(key) | vector_settings() | set(EXTRAS)
    return untimed({k: v for k, v in row.items() if k not in drop})


def untimed(row: dict) -> dict:
    """``row`` without its time per phase (``seconds_*``): a reused result costs nothing where it is reused."""
    return {k: v for k, v in row.items() if not k.startswith("seconds_")}


def run_grid(grid: Grid, out=None, model=None, saes: dict | None = None, vectors: dict | None = None,
             executor=None, progress: bool = True, conditions: list[Condition] | None = None) -> list[dict]:
    """Run every condition of ``grid`` not already in ``out`` and return the grid's rows, in grid order.

    ``model`` and ``saes`` ({layer: SAE}) may be passed loaded (their names then go into the keys);
    ``executor(grid, shards, on_row)`` runs shards of the remaining conditions elsewhere and calls
    ``on_row(row, texts)`` for each finished row (``sas.runs.ray``); by default they run here.
    ``conditions``: run these instead of ``grid.conditions()`` (e.g. the strengths a benchmark chose per layer).
    """
    if model is not None:
        grid.model, grid.dtype = model.cfg.model_name, str(model.cfg.dtype).removeprefix("torch.")
    if saes:
        from ..load.saes import sae_name

        grid.saes = {**{int(x): sae_name(s) for x, s in saes.items()}, **grid.saes}
    with hold(out):
        store = ResultStore(out, grid.kind)
        if store.vector_dir is not None:  # an executor's workers cache their vectors beside the rows too
            grid.vector_dir = str(store.vector_dir)
        return _run_grid(grid, store, model, saes, vectors, executor, progress, conditions)


def _run_grid(grid, store, model, saes, vectors, executor, progress, conditions) -> list[dict]:
    runner = Runner(grid, model, saes, vectors, store.vector_dir, progress)
    keys = {c: runner.key(c) for c in (grid.conditions() if conditions is None else conditions)}
    todo = [c for c, k in keys.items() if store.find(k) is None]
    for c in todo:  # an unsteered row from an earlier run of the same item and settings is reused, by any method
        if c.multiplier == 0 and c.item not in runner.unsteered:
            old = store.find_like(keys[c], ignore={"method", "layer"} | vector_settings(c.method))
            if old is not None:
                runner.unsteered[c.item] = unsteered_results(old, keys[c])
    if todo:
        runner.preflight(todo)
        if executor is None:
            runner.run(todo, on_row=store.append)
        else:  # the rows come back here, in any order: the bar counts them (a serial run's Runner has its own)
            from tqdm.auto import tqdm

            with tqdm(total=len(todo), desc=f"{grid.kind} grid", disable=not progress, smoothing=0) as bar:
                def on_row(row, texts):
                    store.append(row, texts)
                    bar.update()

                executor(grid, Grid.shards(todo, 64), on_row)
    return [store.find(k) for k in keys.values()]
