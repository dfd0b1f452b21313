"""The Ollama client wrapper: calls to /api/chat, with Ollama's failures translated once.

Streaming answers are NDJSON events for the gateway: `{"type": "delta", "content"}` per chunk,
then `{"type": "done", ...counts}`, or `{"type": "error", ...}` if the model fails mid-stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import ollama
import pydantic
import structlog
from infergate_common.aiohttp_transport import AiohttpTransport
from infergate_common.errors import (
    AppError,
    NotFoundError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from infergate_common.metrics import counter
from infergate_common.request_context import REQUEST_ID_HEADER, current_request_id
from prometheus_client import CollectorRegistry

from ai_service.schemas import GenerateRequest, GenerateResponse, ModelInfo

_log = structlog.get_logger("llm")
# Everything the ollama client raises for a failed call (see ecosystem notes, section 3.7).
LLM_ERRORS = (ollama.ResponseError, ConnectionError, httpx.HTTPError, pydantic.ValidationError)
# Opening a connection to the LLM server; `timeout` (seconds without a byte) covers the rest.
CONNECT_TIMEOUT = 3.0


def create_ollama_client(*, url: str, timeout: float) -> ollama.AsyncClient:
    """The official client, its requests sent over aiohttp (call inside the event loop).

    httpcore's connection pool was most of ai-service's CPU under load; the aiohttp transport
    keeps the client's httpx API, timeouts and exceptions. Closing the client closes its pool.
    """
    return ollama.AsyncClient(
        host=url,
        timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
        transport=AiohttpTransport(),
        event_hooks={"request": [_stamp_request_id]},
    )


async def _stamp_request_id(request: httpx.Request) -> None:
    request_id = current_request_id()
    if request_id is not None:
        request.headers[REQUEST_ID_HEADER] = request_id


class ModelTokens:
    """The model's own token counts, as `infergate_ai_model_tokens_total` (not the billed
    figures: those are the gateway's `gen_ai_client_token_usage`). The model label is what the
    gateway asked for, from its allow-list."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._tokens = counter(
            "infergate_ai_model_tokens_total",
            "Tokens the model reported (prompt as input, answer as output), by model.",
            ["gen_ai_token_type", "gen_ai_request_model"],
            registry=registry,
        )

    def start_at_zero(self, model: str) -> None:
        for token_type in ("input", "output"):
            self._tokens.labels(token_type, model)

    def record(self, result: GenerateResponse) -> None:
        if result.promptTokens:
            self._tokens.labels("input", result.model).inc(result.promptTokens)
        if result.completionTokens:
            self._tokens.labels("output", result.model).inc(result.completionTokens)


class LlmClient:
    def __init__(
        self,
        client: ollama.AsyncClient,
        *,
        default_model: str,
        default_options: Mapping[str, Any] | None = None,
        tokens: ModelTokens | None = None,
    ) -> None:
        self._client = client
        self._default_model = default_model
        self._default_options = dict(default_options or {})
        self._tokens = tokens
        if tokens is not None:
            tokens.start_at_zero(default_model)

    def _request(self, body: GenerateRequest) -> tuple[str, dict[str, Any]]:
        model = body.model or self._default_model
        options: dict[str, Any] = {**self._default_options, "num_predict": body.maxTokens}
        for name, value in (
            ("temperature", body.temperature),
            ("top_p", body.topP),
            ("seed", body.seed),
            ("stop", body.stop),
        ):
            if value is not None:
                options[name] = value
        _log.debug("generation_started", model=model, messages=len(body.messages))
        return model, options

    async def generate(self, body: GenerateRequest) -> GenerateResponse:
        model, options = self._request(body)
        try:
            response = await self._client.chat(
                model=model,
                messages=[m.model_dump() for m in body.messages],
                options=options,
                stream=False,
            )
        except LLM_ERRORS as exc:
            raise translate_llm_error(exc, model=model) from exc
        result = _result(response, model=model, output=response.message.content or "")
        if self._tokens is not None:
            self._tokens.record(result)
        return result

    async def models(self) -> list[str]:
        """The models the LLM server has, as `name` (`:latest` dropped) or `name:tag`."""
        return [model.name for model in await self.catalog()]

    async def catalog(self) -> list[ModelInfo]:
        """The models the LLM server has, by name, with what it says about each."""
        try:
            listing = await self._client.list()
        except LLM_ERRORS as exc:
            raise translate_llm_error(exc, model="*") from exc
        by_digest: dict[str, list[str]] = {}
        found: dict[str, ModelInfo] = {}
        for model in listing.models:
            if not model.model:
                continue
            name = model.model.removesuffix(":latest")
            details = model.details
            found[name] = ModelInfo(
                name=name,
                family=details.family if details else None,
                parameterSize=details.parameter_size if details else None,
                quantization=details.quantization_level if details else None,
            )
            if model.digest:
                by_digest.setdefault(model.digest, []).append(name)
        for names in by_digest.values():
            for name in names:
                found[name].sameAs = sorted(set(names) - {name})
        return [found[name] for name in sorted(found)]

    async def stream(self, body: GenerateRequest) -> AsyncIterator[bytes]:
        """NDJSON events; the first chunk is awaited here so early failures raise normally."""
        model, options = self._request(body)
        try:
            parts = await self._client.chat(
                model=model,
                messages=[m.model_dump() for m in body.messages],
                options=options,
                stream=True,
            )
            iterator = aiter(parts)
            first = await anext(iterator)
        except LLM_ERRORS as exc:
            raise translate_llm_error(exc, model=model) from exc
        return _events(first, iterator, model=model, tokens=self._tokens)


async def _events(
    first: ollama.ChatResponse,
    rest: AsyncIterator[ollama.ChatResponse],
    *,
    model: str,
    tokens: ModelTokens | None,
) -> AsyncIterator[bytes]:
    part: ollama.ChatResponse | None = first
    try:
        while part is not None:
            if part.message.content:
                yield _line({"type": "delta", "content": part.message.content})
            if part.done:
                done = _result(part, model=model, output="")
                if tokens is not None:
                    tokens.record(done)
                yield _line({"type": "done", **done.model_dump(exclude={"output"})})
                return
            part = await anext(rest, None)
    except LLM_ERRORS as exc:
        error = translate_llm_error(exc, model=model)
        yield _line(
            {
                "type": "error",
                "status": error.status_code,
                "code": error.error_code,
                "message": error.message,
            }
        )
        return
    # The stream ended without a final object: report it rather than invent counts.
    yield _line(
        {
            "type": "error",
            "status": 503,
            "code": "llm_error",
            "message": "The LLM stream ended early",
        }
    )


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def _result(response: ollama.ChatResponse, *, model: str, output: str) -> GenerateResponse:
    prompt_tokens = _count(response.prompt_eval_count, "prompt_eval_count")
    completion_tokens = _count(response.eval_count, "eval_count")
    known = prompt_tokens is not None and completion_tokens is not None
    # Debug: the counts are in the request log (usage-service) and the access line is at info.
    _log.debug(
        "generation_finished",
        model=model,
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
    )


def _count(value: int | None, field: str) -> int | None:
    """A count as the model reported it; None when it left it out (Ollama omits zero-valued
    metrics, and older servers skip cached prompt counts): the gateway then bills a bound, never
    0."""
    if value is None:
        _log.warning("token_count_missing", field=field)
    return value


def translate_llm_error(exc: Exception, *, model: str) -> AppError:
    """Map what the ollama client raises to the gateway's errors (504 timeout, else 503)."""
    if isinstance(exc, httpx.TimeoutException):
        _log.warning("llm_timeout", model=model)
        return UpstreamTimeoutError("AI service timeout", code="llm_timeout")
    if isinstance(exc, ollama.ResponseError):
        _log.warning("llm_error", model=model, status=exc.status_code)
        if exc.status_code == 404:
            # The request's fault (a model the server lacks), not the LLM's: a 404 for that
            # request, which never counts against the model's circuit breaker.
            return NotFoundError(
                f"Model '{model}' is not available on the LLM server", code="model_not_found"
            )
        return UpstreamUnavailableError("The LLM server returned an error", code="llm_error")
    if isinstance(exc, ConnectionError | httpx.TransportError):
        _log.warning("llm_unreachable", model=model, error_type=type(exc).__name__)
        return UpstreamUnavailableError("LLM unavailable", code="llm_unavailable")
    _log.warning("llm_invalid_response", model=model, error_type=type(exc).__name__)
    return UpstreamUnavailableError("The LLM server sent an invalid response", code="llm_error")
