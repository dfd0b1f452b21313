"""Request and response bodies of the ai-service's internal API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, Field(min_length=1, max_length=1_000_000)]
    maxTokens: Annotated[int, Field(ge=1, le=32_768)]
    model: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    seed: int | None = None


class GenerateResponse(BaseModel):
    output: str
    tokens: int
    promptTokens: int
    completionTokens: int
    model: str
    doneReason: str
