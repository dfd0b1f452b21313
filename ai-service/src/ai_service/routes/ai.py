"""Internal AI route: one model call."""

from __future__ import annotations

from fastapi import APIRouter

from ai_service.deps import LlmDep
from ai_service.schemas import GenerateRequest, GenerateResponse

router = APIRouter(prefix="/ai", tags=["ai"])


@router.post("/generate", response_model=GenerateResponse)
async def generate(body: GenerateRequest, llm: LlmDep) -> GenerateResponse:
    """Run the prompt through the model with the given output cap and return text and counts."""
    return await llm.generate(body)
