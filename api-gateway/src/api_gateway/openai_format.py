"""Chat results in OpenAI's shapes: the completion object and the streamed chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from infergate_common.errors import ErrorResponse

from api_gateway.chat_events import Delta, Failed, Finished, StreamEvent
from api_gateway.openai_errors import openai_error_parts
from api_gateway.openai_schemas import ChatCompletion, Choice, ChoiceMessage, Usage
from api_gateway.sse import sse_event


@dataclass(frozen=True)
class CompletionIds:
    id: str
    created: int
    model: str


def usage_of(finished: Finished) -> Usage:
    """The tokens charged: `total_tokens` is what the month's quota went down by."""
    settlement = finished.settlement
    return Usage(
        prompt_tokens=settlement.prompt_tokens,
        completion_tokens=settlement.completion_tokens,
        total_tokens=settlement.charged_tokens,
    )


def completion(ids: CompletionIds, finished: Finished) -> ChatCompletion:
    generation = finished.generation
    return ChatCompletion(
        id=ids.id,
        created=ids.created,
        model=ids.model,
        choices=[
            Choice(
                message=ChoiceMessage(content=generation.output),
                finish_reason=generation.doneReason,
            )
        ],
        usage=usage_of(finished),
    )


def _chunk(ids: CompletionIds, choices: list[dict[str, Any]], **extra: Any) -> bytes:
    return sse_event(
        {
            "id": ids.id,
            "object": "chat.completion.chunk",
            "created": ids.created,
            "model": ids.model,
            "choices": choices,
            **extra,
        }
    )


async def completion_chunks(
    ids: CompletionIds, events: AsyncIterator[StreamEvent], *, include_usage: bool
) -> AsyncIterator[bytes]:
    """`chat.completion.chunk` events, a final chunk with the finish reason, usage if asked
    for, then `[DONE]`; a failure mid-stream ends with an error object (SDKs raise it)."""
    yield _chunk(
        ids, [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    )
    async for event in events:
        if isinstance(event, Delta):
            yield _chunk(
                ids, [{"index": 0, "delta": {"content": event.text}, "finish_reason": None}]
            )
        elif isinstance(event, Finished):
            yield _chunk(
                ids, [{"index": 0, "delta": {}, "finish_reason": event.generation.doneReason}]
            )
            if include_usage:
                yield _chunk(ids, [], usage=usage_of(event).model_dump())
            yield sse_event("[DONE]")
        elif isinstance(event, Failed):
            error = event.error
            _, body, _ = openai_error_parts(
                ErrorResponse(error.status_code, error.message, error.error_code, {})
            )
            yield sse_event(body)
