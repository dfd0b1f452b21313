"""Request and response bodies of the ai-service's internal API."""

from __future__ import annotations

from typing import Annotated, Literal

from infergate_common.validation import Seed
from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: Annotated[str, Field(max_length=1_000_000)]


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=500)]
    maxTokens: Annotated[int, Field(ge=1, le=32_768)]
    model: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    topP: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: Seed | None = None
    stop: (
        Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=4)]
        | None
    ) = None
    stream: bool = False


class GenerateResponse(BaseModel):
    """A model's answer; a count the model did not report is null."""

    output: str
    tokens: int | None
    promptTokens: int | None
    completionTokens: int | None
    model: str
    doneReason: str
    # The configured name of the backend that answered (never its URL).
    backend: str | None = None


class ModelInfo(BaseModel):
    """What the LLM server says about one model name (Ollama's /api/tags details)."""

    name: str
    # Other names of the same model file (the same digest): an alias such as `llama3` for the
    # embedded SmolLM2 lists the real name here.
    sameAs: list[str] = []
    family: str | None = None
    parameterSize: str | None = None
    quantization: str | None = None


class ModelList(BaseModel):
    models: list[str]
    details: list[ModelInfo] = []
