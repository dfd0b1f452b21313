"""Typed dependencies of ai-service's routes."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from ai_service.llm import LlmClient


async def get_llm(request: Request) -> LlmClient:
    return cast(LlmClient, request.state.llm)


LlmDep = Annotated[LlmClient, Depends(get_llm)]
