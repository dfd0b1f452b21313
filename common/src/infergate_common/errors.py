"""The one error tree and the handlers that turn every failure into one JSON body.

Public InferGate errors answer `{"message", "code", "requestId"}`. Validation errors become 400,
unknown routes 404, and anything unexpected a logged 500 without internals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from infergate_common.request_context import current_request_id

_log = structlog.get_logger("errors")


class AppError(Exception):
    """An error with an HTTP status, a stable snake_case code and a message for the client."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        fields: Mapping[str, int] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.error_code = code or self.code
        self.headers = dict(headers or {})
        # Figures the client can act on (e.g. the tokens a refused chat needed), in the body.
        self.fields = dict(fields or {})
        super().__init__(self.message)


class BadRequestError(AppError):
    status_code = 400
    code = "bad_request"
    default_message = "Bad request"


class UnauthorizedError(AppError):
    status_code = 401
    code = "unauthorized"
    default_message = "Unauthorized"


class ForbiddenError(AppError):
    status_code = 403
    code = "forbidden"
    default_message = "Forbidden"


class NotFoundError(AppError):
    status_code = 404
    code = "not_found"
    default_message = "Not found"


class ConflictError(AppError):
    status_code = 409
    code = "conflict"
    default_message = "Conflict"


class RateLimitedError(AppError):
    status_code = 429
    code = "rate_limited"
    default_message = "Too many requests. Try again later."


class UpstreamUnavailableError(AppError):
    status_code = 503
    code = "upstream_unavailable"
    default_message = "Service unavailable"


class UpstreamTimeoutError(AppError):
    status_code = 504
    code = "upstream_timeout"
    default_message = "Upstream timeout"


_BY_STATUS: dict[int, type[AppError]] = {
    cls.status_code: cls
    for cls in (
        BadRequestError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        ConflictError,
        RateLimitedError,
        UpstreamUnavailableError,
        UpstreamTimeoutError,
    )
}


def error_for_status(
    status: int, message: str, code: str | None = None, fields: Mapping[str, int] | None = None
) -> AppError:
    """Build the local error matching a downstream status (used by the internal clients)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = BadRequestError if 400 <= status < 500 else UpstreamUnavailableError
    return cls(message, code=code, fields=fields)


def error_body(message: str, code: str, fields: Mapping[str, int] | None = None) -> dict[str, Any]:
    return {"message": message, "code": code, "requestId": current_request_id(), **(fields or {})}


class ErrorBody(BaseModel):
    """Every InferGate error body (the services' and nginx's), as the OpenAPI documents show it."""

    message: str
    code: str
    requestId: str | None


def error_responses(
    *statuses: int, model: type[BaseModel] = ErrorBody
) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: the error statuses it can answer, each with the error body."""
    return {status: {"model": model} for status in statuses}


# Error kinds that mean "this field is missing or not the right kind of value": they get the
# field's own message (the original's texts, such as "Prompt is required").
_FIELD_MESSAGE_TYPES = frozenset(
    {"missing", "string_type", "string_too_short", "value_error", "model_type", "dict_type"}
)


def _validation_message(
    errors: Sequence[Any], field_messages: Mapping[str, str]
) -> tuple[str, str]:
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if error.get("type") not in _FIELD_MESSAGE_TYPES:
            continue
        for name, message in field_messages.items():
            if name in loc:
                return message, "validation_error"
    first = errors[0] if errors else {}
    kind = first.get("type", "")
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if kind == "json_invalid":
        return "Request body is not valid JSON", "invalid_json"
    if kind == "missing" and not loc:
        return "Request body is required", "validation_error"
    if kind == "extra_forbidden":
        return f"Unknown field: {'.'.join(loc)}", "validation_error"
    if kind == "model_attributes_type" and not loc:
        return "Request body must be a JSON object", "validation_error"
    where = ".".join(loc) or "body"
    return f"Invalid request: {where}: {first.get('msg', 'invalid value')}", "validation_error"


def _body_not_declared_json(request: Request, errors: Sequence[Any]) -> bool:
    """The body was refused as a whole (not one of its fields), and its Content-Type is not
    JSON (missing, or a form's, as `curl -d` sends by default)."""
    whole_body = any(
        tuple(error.get("loc", ())) == ("body",) and error.get("type") != "missing"
        for error in errors
    )
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_json = media_type == "application/json" or media_type.endswith("+json")
    return whole_body and request.method in ("POST", "PUT", "PATCH") and not is_json


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """One error about to be answered; a renderer turns it into the route family's shape."""

    status: int
    message: str
    code: str
    headers: Mapping[str, str]
    fields: Mapping[str, int] = field(default_factory=dict)


ErrorRenderer = Callable[[Request, ErrorResponse], JSONResponse]


def render_infergate_error(_: Request, error: ErrorResponse) -> JSONResponse:
    """InferGate's shape: `{"message", "code", "requestId"}`."""
    return JSONResponse(
        error_body(error.message, error.code, error.fields),
        error.status,
        headers=dict(error.headers),
    )


def install_error_handlers(
    app: FastAPI,
    *,
    field_messages: Mapping[str, str] | None = None,
    render: ErrorRenderer = render_infergate_error,
) -> None:
    """Register the handlers that turn every error into one JSON body.

    `field_messages` maps a body field name to the message shown when it fails validation
    (the original's texts, such as "Prompt is required"). `render` chooses the body's shape
    (a gateway may answer some routes in OpenAI's shape).
    """
    messages = dict(field_messages or {})

    async def on_app_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        return render(
            request,
            ErrorResponse(exc.status_code, exc.message, exc.error_code, exc.headers, exc.fields),
        )

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, code = _validation_message(exc.errors(), messages)
        if code != "invalid_json" and _body_not_declared_json(request, exc.errors()):
            # `curl -d '{...}'` without -H 'content-type: application/json': the body may well
            # be JSON, but it was not read as such. Say what to fix.
            message = (
                "Request body must be sent as JSON: add the header 'Content-Type: application/json'"
            )
            code = "invalid_content_type"
        return render(request, ErrorResponse(400, message, code, {}))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = "Not found" if exc.status_code == 404 else str(exc.detail)
        return render(request, ErrorResponse(exc.status_code, message, code, exc.headers or {}))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("unhandled_error", error_type=type(exc).__name__)
        return render(request, ErrorResponse(500, "Internal server error", "internal_error", {}))

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
