"""Request bodies of the server: OpenAI's completion and chat fields plus ``steer``, validated by pydantic.

The ``openai`` client sends ``extra_body`` keys at the top level of the JSON body, so
``client.completions.create(..., extra_body={"steer": [...]})`` arrives as ``"steer": [...]`` here.
Unknown fields are refused (a misspelt ``"stear"`` must not silently run unsteered); OpenAI fields this
server does not implement are accepted only at their default value.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# refuse NaN and +-inf (JSON's NaN/Infinity literals and the strings "nan"/"inf")
_FINITE = {"allow_inf_nan": False}
_NAME = re.compile(r"[A-Za-z0-9_.\-/]{1,200}")  # a vector name or a path under the vectors folder


def vector_name(v: str) -> str:
    """``v`` if it can name a vector (1-200 letters, digits, ``_ . - /``), else ``ValueError`` saying so."""
    if not _NAME.fullmatch(v):
        raise ValueError(f"{v[:40]!r}{'...' if len(v) > 40 else ''} is not a vector name: use 1-200 letters, digits "
                         "and _ . - / (a registered name, or a file path relative to the vectors folder)")
    return v


class Steer(BaseModel):
    """One steering term: a vector (a registered name or a file under the vectors folder), its strength
    (the multiplier; 0 leaves the row unsteered), the layers to steer (default: all of the vector's),
    and the positions (``after_prompt``: the last prompt token and every new token; ``all``; ``front``);
    ``condition``: a saved condition file under the vectors folder: the row is edited only where it holds."""

    model_config = ConfigDict(extra="forbid")

    vector: str
    strength: float = Field(1.0, **_FINITE)
    layers: list[int] | None = None
    positions: Literal["after_prompt", "all", "front"] | None = None
    condition: str | None = None

    _vector = field_validator("vector")(vector_name)
    _condition = field_validator("condition")(lambda v: v if v is None else vector_name(v))

    @field_validator("layers")
    @classmethod
    def _distinct(cls, v):
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"layers {v} repeats a layer; list each layer once")
        return v


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0, **_FINITE)  # 0: greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0, **_FINITE)
    top_k: int = Field(50, ge=1)  # not OpenAI's: sampling keeps the top k tokens first (as sas.generate)
    seed: int | None = Field(None, ge=-2**63, le=2**63 - 1)  # a 64-bit integer, as OpenAI's
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: dict | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    steer: list[Steer] = Field(default_factory=list)
    ignore_eos: bool = False  # vLLM's extra field: generate max_tokens tokens even past EOS (benchmarks)
    # OpenAI fields not implemented here: refused unless at their default
    logprobs: bool | int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    def unsupported(self) -> str | None:
        """The name of a set OpenAI field this server does not implement, or None."""
        for name in ("logprobs", "logit_bias"):
            if getattr(self, name):
                return name
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                return name
        return None


class CompletionRequest(_Common):
    prompt: str | list[str]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def unsupported(self) -> str | None:
        if self.echo:
            return "echo"
        if self.best_of not in (None, 1):
            return "best_of"
        if self.suffix:
            return "suffix"
        return super().unsupported()


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. "name"
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class LoadVector(BaseModel):
    """``POST /v1/vectors``: load the saved vector file ``path`` (relative to the vectors folder; default
    ``name``) and register it as ``name``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    path: str | None = None

    _names = field_validator("name", "path")(lambda v: v if v is None else vector_name(v))
