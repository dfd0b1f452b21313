"""A submitted job turned into Ollama's answer: NDJSON chunks or one JSON object.

The status is decided by the first event, so an error before any output is a normal JSON
error with its status; after the stream has started it can only be a last `{"error": ...}`
line. A client that goes away cancels its job: Starlette cancels the stream when it sees the
disconnect, and until the response starts a watcher task listens for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from infergate_local_llm.boundary import OllamaError, OllamaJSONResponse
from infergate_local_llm.generation import Event, Failed, Finished, TextPiece
from infergate_local_llm.wire import Envelope, ndjson_line
from infergate_local_llm.worker import GenerationJob

NDJSON = "application/x-ndjson"


async def respond(
    request: Request, job: GenerationJob, envelope: Envelope, *, stream: bool, received_ns: int
) -> Response:
    """Wait for the job's first event, then answer in the requested mode."""
    watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
    try:
        first = await job.next_event()
        if isinstance(first, Failed):
            raise OllamaError(first.status, first.message)
        if not stream:
            return await _whole(job, envelope, first=first, received_ns=received_ns)
    except BaseException:
        job.cancel()
        raise
    finally:
        # From here on Starlette's StreamingResponse listens for the disconnect itself.
        watcher.cancel()
        await asyncio.wait([watcher])
    return _JobStream(job, _lines(job, envelope, first=first, received_ns=received_ns))


class _JobStream(StreamingResponse):
    """An NDJSON stream that cancels its job however it ends, even before the first line."""

    def __init__(self, job: GenerationJob, lines: AsyncIterator[bytes]) -> None:
        super().__init__(lines, media_type=NDJSON)
        self._job = job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._job.cancel()  # a no-op once finished; stops it if the client went away


async def _cancel_on_disconnect(request: Request, job: GenerationJob) -> None:
    # The body has been read, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        continue
    job.cancel()


def _final(
    envelope: Envelope, job: GenerationJob, done: Finished, *, text: str, received_ns: int
) -> dict[str, Any]:
    now = time.monotonic_ns()
    # load_duration: the time before the model started on this request (queueing included).
    return envelope.final(
        done, text=text, total_ns=now - received_ns, load_ns=max(job.started_ns - received_ns, 1)
    )


async def _whole(
    job: GenerationJob, envelope: Envelope, *, first: Event, received_ns: int
) -> Response:
    pieces: list[str] = []
    event = first
    while isinstance(event, TextPiece):
        pieces.append(event.text)
        event = await job.next_event()
    if isinstance(event, Failed):
        raise OllamaError(event.status, event.message)
    body = _final(envelope, job, event, text="".join(pieces), received_ns=received_ns)
    return OllamaJSONResponse(body)


async def _lines(
    job: GenerationJob, envelope: Envelope, *, first: Event, received_ns: int
) -> AsyncIterator[bytes]:
    event = first
    while isinstance(event, TextPiece):
        yield ndjson_line(envelope.chunk(event.text))
        event = await job.next_event()
    if isinstance(event, Failed):
        yield ndjson_line({"error": event.message})
    else:
        yield ndjson_line(_final(envelope, job, event, text="", received_ns=received_ns))
