"""The prompting baseline (AxBench found it beats every steering method): no vector, a concept prefix or
instruction prepended to each prompt. Its own text is not scored, and fluency is measured on the continuation
given the prompt without the prefix, as for every steering method."""

from __future__ import annotations

from dataclasses import dataclass, field

from .registry import register

PROMPT_LAYER = -1  # a result row's layer for a method that steers no layer


@dataclass
class Prompting:
    """What the ``prompt`` method builds: a prefix (``None``: the concept's own ``prefix``)."""

    prefix: str | None = None
    method: str = "prompt"
    layers: list[int] = field(default_factory=lambda: [PROMPT_LAYER])
    settings: dict = field(default_factory=dict)


@register("prompt", multipliers=(0, 1), steers=False)
def build(model, contrast, layers, saes=None, positions="after_prompt", prefix: str | None = None) -> Prompting:
    """Prompting: prepend the concept's prefix (or ``prefix``) to each prompt; strength 1 prompts, 0 does not."""
    if prefix is not None and not (isinstance(prefix, str) and prefix.strip()):
        raise ValueError("the prompt method's prefix must be a non-empty string (or None for the concept's own)")
    return Prompting(prefix)
