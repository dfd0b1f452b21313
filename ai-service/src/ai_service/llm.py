"""The Ollama client wrapper: one call to /api/chat, with Ollama's failures translated once."""

from __future__ import annotations

from typing import Any

import httpx
import ollama
import pydantic
import structlog
from infergate_common.errors import AppError, UpstreamTimeoutError, UpstreamUnavailableError

from ai_service.schemas import GenerateRequest, GenerateResponse

_log = structlog.get_logger("llm")
# Everything the ollama client raises for a failed call (see ecosystem notes, section 3.7).
LLM_ERRORS = (ollama.ResponseError, ConnectionError, httpx.HTTPError, pydantic.ValidationError)


class LlmClient:
    def __init__(
        self,
        client: ollama.AsyncClient,
        *,
        default_model: str,
        default_options: dict[str, Any] | None = None,
    ) -> None:
        self._client = client
        self._default_model = default_model
        self._default_options = dict(default_options or {})

    async def generate(self, body: GenerateRequest) -> GenerateResponse:
        model = body.model or self._default_model
        options: dict[str, Any] = {**self._default_options, "num_predict": body.maxTokens}
        if body.temperature is not None:
            options["temperature"] = body.temperature
        if body.seed is not None:
            options["seed"] = body.seed
        _log.info("generation_started", model=model, prompt_chars=len(body.prompt))
        try:
            response = await self._client.chat(
                model=model,
                messages=[{"role": "user", "content": body.prompt}],
                options=options,
                stream=False,
            )
        except LLM_ERRORS as exc:
            raise translate_llm_error(exc, model=model) from exc
        prompt_tokens = _count(response.prompt_eval_count, "prompt_eval_count")
        completion_tokens = _count(response.eval_count, "eval_count")
        _log.info(
            "generation_finished",
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            done_reason=response.done_reason,
        )
        return GenerateResponse(
            output=response.message.content or "",
            tokens=prompt_tokens + completion_tokens,
            promptTokens=prompt_tokens,
            completionTokens=completion_tokens,
            model=model,
            doneReason=response.done_reason or "stop",
        )


def _count(value: int | None, field: str) -> int:
    if value is None:
        # Ollama omits zero-valued metrics (and older servers skip cached prompt counts).
        _log.warning("token_count_missing", field=field)
        return 0
    return value


def translate_llm_error(exc: Exception, *, model: str) -> AppError:
    """Map what the ollama client raises to the gateway's errors (504 timeout, else 503)."""
    if isinstance(exc, httpx.TimeoutException):
        _log.warning("llm_timeout", model=model)
        return UpstreamTimeoutError("AI service timeout", code="llm_timeout")
    if isinstance(exc, ollama.ResponseError):
        _log.warning("llm_error", model=model, status=exc.status_code)
        if exc.status_code == 404:
            return UpstreamUnavailableError(
                f"Model '{model}' is not available on the LLM server", code="model_not_found"
            )
        return UpstreamUnavailableError("The LLM server returned an error", code="llm_error")
    if isinstance(exc, ConnectionError | httpx.TransportError):
        _log.warning("llm_unreachable", model=model, error_type=type(exc).__name__)
        return UpstreamUnavailableError("LLM unavailable", code="llm_unavailable")
    _log.warning("llm_invalid_response", model=model, error_type=type(exc).__name__)
    return UpstreamUnavailableError("The LLM server sent an invalid response", code="llm_error")
