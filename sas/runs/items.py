"""What a grid evaluates: an A/B behaviour (CAA's score) or a concept's open-ended continuations (a benchmark
concept on one split, or a task: a concept with raw multipliers), each with its contrastive data (for the
vectors), its settings (part of every row's resume key) and its evaluation. :data:`ITEMS` holds the kinds: the
store reads each kind's column from it, a grid its settings (the keyword arguments of the kind's class)."""

from __future__ import annotations

import inspect
import time
from functools import cached_property

from ..activations.contrast import Contrast
from ..evaluation.ab import ABScorer
from ..evaluation.side_effects import side_effects
from ..load.data import BEHAVIORS, balance_letters, load_behavior


class ABItem:
    """A CAA behaviour: vectors from its ``generate`` split (letter-balanced by default), the A/B score on
    the first ``n_test`` questions of its ``test`` split."""

    column = "behavior"
    positions = "after_prompt"

    def __init__(self, name: str, n_test: int | None = None, balance: bool = True, seed: int = 0,
                 side_effects: bool = False):
        if name not in BEHAVIORS:
            raise ValueError(f"unknown behaviour {name!r}; choose from {', '.join(BEHAVIORS)} or 'all'")
        if n_test is not None and n_test < 1:
            raise ValueError(f"n_test must be at least 1, not {n_test}")
        self.name, self.n_test, self.balance, self.seed, self.side_effects = name, n_test, balance, seed, side_effects
        self._scorer, self._se = None, {}

    @cached_property
    def test(self):
        return load_behavior(self.name, "test")[:self.n_test]

    def settings(self) -> dict:
        return {"n_test": len(self.test), "balance": self.balance, "seed": self.seed, "side_effects": self.side_effects}

    @cached_property
    def contrast(self) -> Contrast:
        pairs = load_behavior(self.name)
        return Contrast(self.name, pairs=balance_letters(pairs, self.seed) if self.balance else pairs)

    def evaluate(self, model, vector, multiplier: float, layer: int) -> tuple[dict, None]:
        if self._scorer is None:
            self._scorer = ABScorer(model, self.test)
        steer = vector is not None and multiplier != 0
        res = self._scorer.score(vector if steer else None, multiplier, [layer])
        if self.side_effects:
            res.update(side_effects(model, vector if steer else None, multiplier, [layer], scorers=self._se))
        return res, None


class ConceptItem:
    """A benchmark concept (:mod:`sas.concepts`) on one split of its prompts: vectors from its contrastive pairs
    (ActAdd from its prompt pair), continuations of the first ``n_prompts`` prompts of ``split`` scored by the
    concept's scorer. Strengths (the conditions' multipliers) are relative edit sizes
    (:mod:`sas.steering.strength`), calibrated on the concept's tuning prompts, so a strength is the same
    intervention on both splits. ``fluency``: the measures of :mod:`sas.evaluation.fluency` to add to each row
    beyond the perplexity under the unsteered model (``"smollm2"``, ``"kl"``)."""

    column = "concept"
    positions = "after_prompt"

    def __init__(self, name: str, split: str = "tuning", n_prompts: int = 32, max_new_tokens: int = 24, seed: int = 0,
                 n_calibration: int = 32, batch_size: int = 32, fluency=()):
        from ..concepts import SPLITS, get_concept
        from ..evaluation.fluency import MEASURES, check_fluency_model

        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        if n_prompts < 1 or max_new_tokens < 1:
            raise ValueError(f"n_prompts and max_new_tokens must be at least 1 (got {n_prompts}, {max_new_tokens})")
        self.concept = get_concept(name)
        self.name = self.concept.name if not str(name).endswith((".yaml", ".yml", ".json", ".jsonl")) else str(name)
        self.split, self.n_prompts, self.max_new_tokens, self.seed = split, n_prompts, max_new_tokens, seed
        self.n_calibration, self.batch_size = n_calibration, batch_size
        self.fluency = sorted(set(fluency) - {"perplexity"})
        unknown = [m for m in self.fluency if m not in MEASURES]
        if unknown:
            raise ValueError(f"unknown fluency measure(s) {unknown}; choose from {sorted(MEASURES)}")
        if "smollm2" in self.fluency:
            check_fluency_model()  # before any generation
        self._acts: dict = {}

    def settings(self) -> dict:
        s = {"split": self.split, "n_prompts": self.n_prompts, "max_new_tokens": self.max_new_tokens,
             "seed": self.seed, "concept_hash": self.concept.data_hash, "n_calibration": self.n_calibration}
        return {**s, "fluency": self.fluency} if self.fluency else s  # rows made without one still resume

    @cached_property
    def prompts(self) -> list[str]:
        from ..concepts import steering_prompts

        return steering_prompts(self.concept, self.split, self.n_prompts)

    @cached_property
    def contrast(self) -> Contrast:
        return Contrast(self.concept.name, positive=self.concept.positive_texts(),
                        negative=self.concept.negative_texts(), prompt_pair=self.concept.actadd_pair)

    def calibration(self, model, vector, layer: int):
        """Activations of the tuning prompts where ``vector`` steers ``layer`` (cached per hook point)."""
        from ..concepts import steering_prompts
        from ..steering.strength import layer_activations

        key = vector.hook_name(layer)
        if key not in self._acts:
            self._acts[key] = layer_activations(model, steering_prompts(self.concept, "tuning", self.n_calibration),
                                                vector, layer)
        return self._acts[key]

    def raw_multipliers(self, model, vector, layer: int, strengths) -> list[float | Exception]:
        """The vector's multiplier for each relative strength; a strength it cannot reach gives the
        :class:`~sas.steering.strength.Unreachable` that says why, in its place."""
        from ..steering.strength import Unreachable, raw_multiplier

        acts = self.calibration(model, vector, layer)
        out = []
        for s in strengths:
            try:
                out.append(raw_multiplier(vector, layer, acts, float(s)))
            except Unreachable as e:
                out.append(e)
        return out

    def evaluate_many(self, model, vector, strengths, layer: int) -> list[tuple[dict, list[str]]]:
        """One ``(row, texts)`` per strength, all strengths in shared batches."""
        from ..evaluation.concept import evaluate_concept
        from ..methods.prompt import Prompting

        common = dict(max_new_tokens=self.max_new_tokens, seed=self.seed, batch_size=self.batch_size,
                      fluency_context=self.concept.prefix if "smollm2" in self.fluency else None)
        no_edit = {"kl": 0.0} if "kl" in self.fluency else {}  # prompting and the unsteered model edit nothing
        if isinstance(vector, Prompting):
            out = []
            for s in strengths:  # 1: prompting, 0: not
                prefix = (vector.prefix or self.concept.prefix) if s else None
                out += [({**r, **no_edit}, t) for r, t in
                        evaluate_concept(model, self.concept, self.prompts, prefix=prefix, **common)]
            return out
        if vector is None:
            return [({**r, **no_edit}, t) for r, t in
                    evaluate_concept(model, self.concept, self.prompts, **common)] * len(strengths)
        raw = self.raw_multipliers(model, vector, layer, strengths)
        ok = [m for m in raw if not isinstance(m, Exception)]
        done = iter(evaluate_concept(model, self.concept, self.prompts, vector, layer, ok, **common) if ok else [])
        if "kl" in self.fluency and ok:
            from ..evaluation.fluency import steering_kl

            tick = time.time()
            kls = iter(steering_kl(model, vector, layer, ok))
            kl_seconds = (time.time() - tick) / len(ok)
        out = []
        for m in raw:  # a strength the vector cannot reach is a row that says why; the others run
            if isinstance(m, Exception):
                out.append(({"skipped": f"{vector.method} at layer {layer}: {m}"}, None))
                continue
            row, texts = next(done)
            row["raw_multiplier"] = m
            if "kl" in self.fluency:
                row["kl"], row["seconds_kl"] = next(kls), kl_seconds
            out.append((row, texts))
        return out

    def evaluate(self, model, vector, multiplier: float, layer: int) -> tuple[dict, list[str]]:
        return self.evaluate_many(model, vector, [multiplier], layer)[0]


class TaskItem(ConceptItem):
    """A task (``--task``): the concept :func:`sas.concepts.task_concept` names (``sentiment``, ``topic`` or any
    concept) steered with raw multipliers (the vector's own units, no calibration) on the first ``n_prompts``
    prompts of its pool (no split), in rows with a ``task`` column; ``side_effects`` adds MMLU, TruthfulQA and
    perplexity to each row. Rows of sas 0.1's task evaluation read as other settings (they have no
    ``concept_hash``): they load and report, and a rerun adds this evaluation's rows beside them."""

    column = "task"

    def __init__(self, name: str, n_prompts: int = 40, max_new_tokens: int = 30, seed: int = 0,
                 side_effects: bool = False, batch_size: int = 40):
        from ..concepts import task_concept

        if n_prompts < 1 or max_new_tokens < 1:
            raise ValueError(f"n_prompts and max_new_tokens must be at least 1 (got {n_prompts}, {max_new_tokens})")
        self.concept, self.name = task_concept(name), str(name)
        self.n_prompts, self.max_new_tokens, self.seed, self.batch_size = n_prompts, max_new_tokens, seed, batch_size
        self.side_effects, self.fluency, self._se = side_effects, [], {}

    def settings(self) -> dict:
        return {"n_prompts": self.n_prompts, "max_new_tokens": self.max_new_tokens, "seed": self.seed,
                "side_effects": self.side_effects, "concept_hash": self.concept.data_hash}

    @cached_property
    def prompts(self) -> list[str]:
        from ..concepts import task_prompts

        return task_prompts(self.concept, self.n_prompts)

    @cached_property
    def contrast(self) -> Contrast:
        return Contrast(self.name, positive=self.concept.positive_texts(), negative=self.concept.negative_texts(),
                        prompt_pair=self.concept.actadd_pair)

    def raw_multipliers(self, model, vector, layer: int, strengths) -> list[float]:
        return [float(s) for s in strengths]

    def evaluate_many(self, model, vector, strengths, layer: int) -> list[tuple[dict, list[str]]]:
        out = super().evaluate_many(model, vector, strengths, layer)
        for s, (row, _) in zip(strengths, out):
            row.setdefault("score_masked", row["score"])
            if self.side_effects:
                row.update(side_effects(model, vector if s else None, s, [layer], scorers=self._se))
        return out


ITEMS = {"ab": ABItem, "task": TaskItem, "concept": ConceptItem}  # kind -> class; its column names the rows' item
KINDS = tuple(ITEMS)


def make_item(kind: str, name: str, settings: dict):
    """The item ``name`` of ``kind`` (a key of :data:`ITEMS`) with those of the grid's evaluation ``settings`` that
    its class takes."""
    if kind not in ITEMS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    takes = inspect.signature(ITEMS[kind]).parameters
    return ITEMS[kind](name, **{k: v for k, v in settings.items() if k in takes and k != "name"})
