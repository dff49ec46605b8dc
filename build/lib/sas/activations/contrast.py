"""Contrastive data as one value: A/B pairs (activations at the answer letter) or text pairs (activations at
the last token), with their hash and their activations, computed once per layer and shared by every
method built from them (CAA, SAS and SAS-dense read the same activations)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..load.data import ABPair, data_hash
from .residual import answer_activations, last_token_activations


@dataclass
class Contrast:
    """``pairs`` (A/B) or ``positive``/``negative`` texts, plus an optional ActAdd prompt pair.

    ``activations(model, layers)`` returns ``(positive, negative)``, each ``{layer: [n, d_model]}``; layers
    already computed are reused, missing ones are computed in one pass.
    """

    name: str = "custom"
    pairs: list[ABPair] | None = None
    positive: list[str] | None = None
    negative: list[str] | None = None
    prompt_pair: tuple[str, str] | None = None  # ActAdd's two prompts, e.g. ("Love", "Hate")
    _acts: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.pairs is None and self.positive is None and self.prompt_pair is None:
            raise ValueError("a Contrast needs A/B pairs, positive/negative texts or a prompt pair")
        if self.positive is not None or self.negative is not None:
            pos, neg = self.positive, self.negative
            if isinstance(pos, str) or isinstance(neg, str):
                raise TypeError("positive and negative are lists of texts, not single strings; wrap them in a list")
            if pos is None or neg is None or len(pos) != len(neg) or not pos:
                raise ValueError(f"need as many positive as negative texts, and at least one; got "
                                 f"{len(pos or [])} and {len(neg or [])}")
        if self.pairs is not None and not self.pairs:
            raise ValueError("the data set is empty: a contrast needs at least one pair")

    @property
    def kind(self) -> str:
        return "ab" if self.pairs is not None else "texts"

    @property
    def hash(self) -> str:
        """A short sha256 of the data (what a vector's ``data_hash`` and a result row's ``data_hash`` hold)."""
        if self.pairs is not None:
            return data_hash(self.pairs)
        if self.positive is not None:
            return data_hash(list(zip(self.positive, self.negative)))
        return data_hash(list(self.prompt_pair))

    @property
    def n_pairs(self) -> int:
        return len(self.pairs) if self.pairs is not None else len(self.positive or [])

    def activations(self, model, layers: Sequence[int]) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        if self.pairs is None and self.positive is None:
            raise ValueError(f"the contrast {self.name!r} holds only an ActAdd prompt pair, no pairs to average")
        key = (model.cfg.model_name, str(model.cfg.dtype))
        have = self._acts.setdefault(key, ({}, {}))
        missing = [x for x in layers if x not in have[0]]
        if missing:
            if self.pairs is not None:
                pos, neg = answer_activations(model, self.pairs, missing, progress=False)
            else:
                pos = last_token_activations(model, self.positive, missing)
                neg = last_token_activations(model, self.negative, missing)
            have[0].update(pos)
            have[1].update(neg)
        return {x: have[0][x] for x in layers}, {x: have[1][x] for x in layers}
