"""Internal AI route: one model call, answered whole or as NDJSON events."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from infergate_common.errors import error_responses

from ai_service.deps import LlmDep
from ai_service.schemas import GenerateRequest, GenerateResponse, ModelList

router = APIRouter(prefix="/ai", tags=["ai"])


@router.post(
    "/generate",
    response_model=GenerateResponse,
    responses={
        **error_responses(404, 503, 504),
        200: {"content": {"application/x-ndjson": {}}, "description": "JSON, or NDJSON events"},
    },
)
async def generate(body: GenerateRequest, llm: LlmDep) -> GenerateResponse | StreamingResponse:
    """Run the conversation through the model with the given output cap."""
    if body.stream:
        return StreamingResponse(await llm.stream(body), media_type="application/x-ndjson")
    return await llm.generate(body)


@router.get("/models", response_model=ModelList, responses=error_responses(503, 504))
async def models(llm: LlmDep) -> ModelList:
    """The models the LLM server has."""
    catalog = await llm.catalog()
    return ModelList(models=[model.name for model in catalog], details=catalog)
