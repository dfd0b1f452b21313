"""Request bodies of the Ollama API, validated at the boundary.

Unknown fields are ignored, as Ollama does, so newer clients keep working. Only the fields this
server acts on are declared; `extra="ignore"` drops the rest (images, logprobs, ...).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# `format` is "json" or a JSON schema object; "" means no format, as in Ollama.
FormatSpec = str | dict[str, Any] | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Options(_Body):
    """The subset of Ollama's runtime options that maps onto llama.cpp's sampler."""

    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, ge=0)
    seed: int | None = None
    num_predict: int | None = None
    num_ctx: int | None = Field(default=None, gt=0)
    stop: list[str] | None = None


class Message(_Body):
    role: str
    content: str = ""

    @field_validator("role")
    @classmethod
    def _lower_role(cls, role: str) -> str:
        # Ollama lower-cases the role; the chat template compares it verbatim.
        return role.lower()


class _GenerationBody(_Body):
    model: str = ""
    stream: bool | None = None
    format: FormatSpec = None
    options: Options = Field(default_factory=Options)
    keep_alive: str | int | float | None = None
    think: bool | str | None = None

    @property
    def streaming(self) -> bool:
        return self.stream is None or self.stream  # streaming is Ollama's default

    @property
    def unloads(self) -> bool:
        return self.keep_alive in (0, "0", 0.0, "0s")


class ChatRequest(_GenerationBody):
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_GenerationBody):
    prompt: str = ""
    suffix: str = ""
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False


class ShowRequest(_Body):
    model: str = ""
    # Older clients send `name`; Ollama still accepts it.
    name: str = ""
    verbose: bool = False

    @property
    def requested(self) -> str:
        return self.model or self.name
