"""Server-Sent Events for streamed chats (InferGate's own event shape)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from infergate_common.request_context import current_request_id

from api_gateway.chat_events import Delta, Failed, Finished, StreamEvent

# nginx must pass each event on at once (the gateway's location also has buffering off).
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(data: dict[str, Any] | str, *, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


async def infergate_events(events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    async for item in events:
        if isinstance(item, Delta):
            yield sse_event({"type": "delta", "output": item.text})
        elif isinstance(item, Finished):
            # The counts charged for (the model's, or the bounds standing in for missing ones).
            yield sse_event(
                {
                    "type": "done",
                    "tokensUsed": item.charged,
                    "promptTokens": item.settlement.prompt_tokens,
                    "completionTokens": item.settlement.completion_tokens,
                    "doneReason": item.generation.doneReason,
                }
            )
        elif isinstance(item, Failed):
            yield sse_event(
                {
                    "type": "error",
                    "message": item.error.message,
                    "code": item.error.error_code,
                    "requestId": current_request_id(),
                    # What the part that was sent is charged (the prompt's bound and the chunks).
                    "tokensUsed": item.settlement.charged_tokens if item.settlement else 0,
                },
                event="error",
            )


def event_stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


async def first_event(
    events: AsyncGenerator[StreamEvent, None],
) -> AsyncIterator[StreamEvent]:
    """Wait for the model's first event: a failure before any text is raised as a plain error
    (with its real status), so a stream is only committed to once the model answers."""
    first = await anext(events)
    if isinstance(first, Failed):
        await events.aclose()
        raise first.error

    async def replay() -> AsyncIterator[StreamEvent]:
        yield first
        async for event in events:
            yield event

    return replay()
