"""The model client: calls to /api/chat on the backend the pool chooses, retried once on another
backend when the first fails before any output, within OLLAMA_TIMEOUT overall.

A retry never bills twice: the gateway reserves and settles once per request, whatever happens
here. After the first chunk of a stream, nothing is retried (see `llm_answers`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from time import perf_counter
from typing import Any

import httpx
import ollama
import structlog
from infergate_common.aiohttp_transport import AiohttpTransport
from infergate_common.errors import AppError
from infergate_common.metrics import counter
from infergate_common.request_context import REQUEST_ID_HEADER, current_request_id
from prometheus_client import CollectorRegistry

from ai_service.backend import RETRYABLE, Backend, classify
from ai_service.backend_pool import BackendPool
from ai_service.catalog import catalog
from ai_service.llm_answers import result, stream_events
from ai_service.llm_errors import LLM_ERRORS, model_not_found, translate_llm_error
from ai_service.schemas import GenerateRequest, GenerateResponse, ModelInfo

__all__ = ["LLM_ERRORS", "LlmClient", "ModelTokens", "create_ollama_client", "translate_llm_error"]

_log = structlog.get_logger("llm")
# Opening a connection to the LLM server; `timeout` (seconds without a byte) covers the rest.
CONNECT_TIMEOUT = 3.0
Messages = list[dict[str, Any]]
Opened = tuple[ollama.ChatResponse, AsyncIterator[ollama.ChatResponse], float]


def create_ollama_client(*, url: str, timeout: float) -> ollama.AsyncClient:
    """The official client, its requests sent over aiohttp (call inside the event loop).

    httpcore's connection pool was most of ai-service's CPU under load; the aiohttp transport
    keeps the client's httpx API, timeouts and exceptions. Closing the client closes its pool.
    """
    return ollama.AsyncClient(
        host=url,
        timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
        transport=AiohttpTransport(),
        event_hooks={"request": [stamp_request_id]},
    )


async def stamp_request_id(request: httpx.Request) -> None:
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
        backends: BackendPool | ollama.AsyncClient,
        *,
        default_model: str,
        default_options: Mapping[str, Any] | None = None,
        tokens: ModelTokens | None = None,
        timeout: float | None = None,
    ) -> None:
        if isinstance(backends, ollama.AsyncClient):
            backends = BackendPool.single(backends)
        self._pool = backends
        self._default_model = default_model
        self._default_options = dict(default_options or {})
        self._tokens = tokens
        self._timeout = timeout  # the whole call, retry included (None: no bound of its own)
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

    def _choose(self, model: str) -> Backend:
        backend = self._pool.choose(model)
        if backend is None:
            raise model_not_found(model)  # no route for it
        return backend

    async def generate(self, body: GenerateRequest) -> GenerateResponse:
        model, options = self._request(body)
        messages = [m.model_dump() for m in body.messages]
        started = perf_counter()
        backend = self._choose(model)
        try:
            response = await self._whole(backend, model, messages, options)
        except LLM_ERRORS as exc:
            backend, remaining = self._retry_target(backend, exc, model=model, started=started)
            try:
                async with asyncio.timeout(remaining):
                    response = await self._whole(backend, model, messages, options)
            except (*LLM_ERRORS, TimeoutError) as again:
                raise translate_llm_error(again, model=model) from again
        output = response.message.content or ""
        answer = result(response, model=model, output=output, backend=backend.name)
        if self._tokens is not None:
            self._tokens.record(answer)
        return answer

    async def stream(self, body: GenerateRequest) -> AsyncIterator[bytes]:
        """NDJSON events; the first chunk is awaited here so early failures raise (and are
        retried) normally."""
        model, options = self._request(body)
        messages = [m.model_dump() for m in body.messages]
        started = perf_counter()
        backend = self._choose(model)
        try:
            first, rest, began = await self._open(backend, model, messages, options)
        except LLM_ERRORS as exc:
            backend, remaining = self._retry_target(backend, exc, model=model, started=started)
            try:
                async with asyncio.timeout(remaining):
                    first, rest, began = await self._open(backend, model, messages, options)
            except (*LLM_ERRORS, TimeoutError) as again:
                raise translate_llm_error(again, model=model) from again
        record = self._tokens.record if self._tokens is not None else _ignore
        return stream_events(first, rest, model=model, backend=backend, began=began, record=record)

    async def _whole(
        self, backend: Backend, model: str, messages: Messages, options: dict[str, Any]
    ) -> ollama.ChatResponse:
        began = backend.begin()
        try:
            response = await backend.client.chat(
                model=model, messages=messages, options=options, stream=False
            )
        except BaseException as exc:
            backend.end(began, backend.failed(exc, model))
            raise
        backend.answered(began)
        backend.end(began, "ok")
        return response

    async def _open(
        self, backend: Backend, model: str, messages: Messages, options: dict[str, Any]
    ) -> Opened:
        began = backend.begin()
        try:
            parts = await backend.client.chat(
                model=model, messages=messages, options=options, stream=True
            )
            iterator = aiter(parts)
            first = await anext(iterator)
        except BaseException as exc:
            backend.end(began, backend.failed(exc, model))
            raise
        backend.answered(began)
        return first, iterator, began

    def _retry_target(
        self, failed: Backend, exc: Exception, *, model: str, started: float
    ) -> tuple[Backend, float | None]:
        """Where to try once more (and the time left), or raise the translated error."""
        error: AppError = translate_llm_error(exc, model=model)
        remaining = None if self._timeout is None else self._timeout - (perf_counter() - started)
        if classify(exc) not in RETRYABLE or (remaining is not None and remaining <= 0):
            raise error from exc
        backend = self._pool.choose(model, avoid=failed)
        if backend is None:
            raise error from exc
        failed.retried()
        _log.info("llm_retry", model=model, failed=failed.name, backend=backend.name)
        return backend, remaining

    async def models(self) -> list[str]:
        """The models the LLM server has, as `name` (`:latest` dropped) or `name:tag`."""
        return [model.name for model in await self.catalog()]

    async def catalog(self) -> list[ModelInfo]:
        """The models the available backends serve, by name, with what they say about each."""
        return await catalog(self._pool)


def _ignore(_: GenerateResponse) -> None:
    return None
