"""Typed dependencies of ai-service's routes: all from the one `Resources` container."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from infergate_common.app import resources_dependency

from ai_service.llm import LlmClient
from ai_service.resources import Resources

get_resources = resources_dependency(Resources)
ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_llm(resources: ResourcesDep) -> LlmClient:
    return resources.llm


LlmDep = Annotated[LlmClient, Depends(get_llm)]
