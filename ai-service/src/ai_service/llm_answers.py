"""Ollama's chat answers turned into ai-service's: a `GenerateResponse`, or NDJSON events for
the gateway: `{"type": "delta", "content"}` per chunk, then `{"type": "done", ...counts,
"backend"}`, or `{"type": "error", ...}` if the model fails mid-stream (never retried: output has
already gone out)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import ollama
import structlog

from ai_service.backend import Backend
from ai_service.backend_metrics import Outcome
from ai_service.llm_errors import LLM_ERRORS, translate_llm_error
from ai_service.schemas import GenerateResponse

_log = structlog.get_logger("llm")


async def stream_events(
    first: ollama.ChatResponse,
    rest: AsyncIterator[ollama.ChatResponse],
    *,
    model: str,
    backend: Backend,
    began: float,
    record: Callable[[GenerateResponse], None],
) -> AsyncIterator[bytes]:
    """The events of a stream whose first chunk `backend` has sent; it is released at the end."""
    outcome: Outcome = "cancelled"
    part: ollama.ChatResponse | None = first
    try:
        while part is not None:
            if part.message.content:
                yield _line({"type": "delta", "content": part.message.content})
            if part.done:
                done = result(part, model=model, output="", backend=backend.name)
                record(done)
                outcome = "ok"
                yield _line({"type": "done", **done.model_dump(exclude={"output"})})
                return
            part = await anext(rest, None)
    except LLM_ERRORS as exc:
        outcome = backend.failed(exc, model)
        error = translate_llm_error(exc, model=model)
        yield _error_line(error.status_code, error.error_code, error.message)
        return
    finally:
        backend.end(began, outcome)
    # The stream ended without a final object: report it rather than invent counts.
    yield _error_line(503, "llm_error", "The LLM stream ended early")


def _error_line(status: int, code: str, message: str) -> bytes:
    return _line({"type": "error", "status": status, "code": code, "message": message})


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def result(
    response: ollama.ChatResponse, *, model: str, output: str, backend: str | None
) -> GenerateResponse:
    prompt_tokens = _count(response.prompt_eval_count, "prompt_eval_count")
    completion_tokens = _count(response.eval_count, "eval_count")
    known = prompt_tokens is not None and completion_tokens is not None
    # Debug: the counts are in the request log (usage-service) and the access line is at info.
    _log.debug(
        "generation_finished",
        model=model,
        backend=backend,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        done_reason=response.done_reason,
    )
    return GenerateResponse(
        output=output,
        tokens=(prompt_tokens or 0) + (completion_tokens or 0) if known else None,
        promptTokens=prompt_tokens,
        completionTokens=completion_tokens,
        model=model,
        doneReason=response.done_reason or "stop",
        backend=backend,
    )


def _count(value: int | None, field: str) -> int | None:
    """A count as the model reported it; None when it left it out (Ollama omits zero-valued
    metrics, and older servers skip cached prompt counts): the gateway then bills a bound, never
    0."""
    if value is None:
        _log.warning("token_count_missing", field=field)
    return value
