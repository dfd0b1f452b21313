"""What the ollama client raises, translated once to the gateway's errors."""

from __future__ import annotations

import httpx
import ollama
import pydantic
import structlog
from infergate_common.errors import (
    AppError,
    NotFoundError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)

_log = structlog.get_logger("llm")
# Everything the ollama client raises for a failed call (see ecosystem notes, section 3.7).
LLM_ERRORS = (ollama.ResponseError, ConnectionError, httpx.HTTPError, pydantic.ValidationError)


def translate_llm_error(exc: Exception, *, model: str) -> AppError:
    """Map what the ollama client raises to the gateway's errors (504 timeout, else 503)."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        _log.warning("llm_timeout", model=model)
        return UpstreamTimeoutError("AI service timeout", code="llm_timeout")
    if isinstance(exc, ollama.ResponseError):
        _log.warning("llm_error", model=model, status=exc.status_code)
        if exc.status_code == 404:
            return model_not_found(model)
        return UpstreamUnavailableError("The LLM server returned an error", code="llm_error")
    if isinstance(exc, ConnectionError | httpx.TransportError):
        _log.warning("llm_unreachable", model=model, error_type=type(exc).__name__)
        return UpstreamUnavailableError("LLM unavailable", code="llm_unavailable")
    _log.warning("llm_invalid_response", model=model, error_type=type(exc).__name__)
    return UpstreamUnavailableError("The LLM server sent an invalid response", code="llm_error")


def model_not_found(model: str) -> NotFoundError:
    # The request's fault (a model the server lacks), not the LLM's: a 404 for that request,
    # which never counts against the gateway's circuit breaker for the model.
    return NotFoundError(
        f"Model '{model}' is not available on the LLM server", code="model_not_found"
    )
