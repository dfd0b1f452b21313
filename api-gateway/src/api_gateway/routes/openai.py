"""OpenAI-compatible routes, so existing SDKs work unchanged (metered and limited like /v1/chat)."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from infergate_common.errors import error_responses

from api_gateway.admission import admit
from api_gateway.deps import (
    AccountViewDep,
    AiClientDep,
    CatalogDep,
    ChatTurnDep,
    CurrentUser,
    LimiterDep,
)
from api_gateway.openai_format import CompletionIds, completion, completion_chunks
from api_gateway.openai_schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ModelCard,
    ModelDetails,
    ModelListing,
    OpenAIErrorBody,
)
from api_gateway.rate_limit_headers import record_tokens
from api_gateway.sse import event_stream, first_event

router = APIRouter(tags=["openai"])


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={
        **error_responses(400, 401, 404, 429, 503, 504, model=OpenAIErrorBody),
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when streaming"},
    },
)
async def chat_completions(
    request: Request,
    body: ChatCompletionRequest,
    turn: ChatTurnDep,
    limiter: LimiterDep,
    catalog: CatalogDep,
) -> ChatCompletion | StreamingResponse:
    """OpenAI chat completions (streaming with `stream: true`, usage with `stream_options`)."""
    model = catalog.resolve(body.model)
    call = turn.model_call(
        body.conversation(),
        model=model,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_list(),
    )
    admitted = await admit(request, turn=turn, call=call, limiter=limiter, early=not body.stream)
    ids = CompletionIds(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model)
    if body.stream:
        events = await first_event(turn.stream(admitted))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return event_stream(completion_chunks(ids, events, include_usage=include_usage))
    finished = await turn.complete(admitted)
    record_tokens(request.scope, finished.tokens)
    return completion(ids, finished)


@router.get(
    "/v1/models",
    response_model=ModelListing,
    response_model_exclude_none=True,
    responses=error_responses(401, 503, 504, model=OpenAIErrorBody),
)
async def list_models(
    user: CurrentUser, ai: AiClientDep, catalog: CatalogDep, view: AccountViewDep
) -> ModelListing:
    """The models you may use: the allowed ones the LLM server has."""
    await view.show_limits(user)
    return ModelListing(
        data=[
            ModelCard(
                id=model.name,
                created=0,
                root=catalog.root(model),
                details=ModelDetails(
                    family=model.family,
                    parameter_size=model.parameterSize,
                    quantization_level=model.quantization,
                ),
            )
            for model in await catalog.available(ai)
        ]
    )
