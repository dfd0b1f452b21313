"""Where HTTP meets the server: body parsing and Ollama's error shape, translated once.

Every error is `{"error": "<message>"}` with Ollama's status codes: 400 for a bad body or a
missing model, 404 for an unknown model, 500 for a failure. Unknown routes get gin's plain-text
404, as from a real Ollama.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)

Body = TypeVar("Body", bound=BaseModel)


class OllamaJSONResponse(JSONResponse):
    media_type = "application/json; charset=utf-8"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class OllamaError(Exception):
    """An error answered as `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def model_not_found(name: str) -> OllamaError:
    return OllamaError(404, f"model '{name}' not found")


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"invalid request: {where}: {first['msg']}" if where else first["msg"]


async def read_body(request: Request, schema: type[Body]) -> Body:
    """Parse and validate a JSON object body, answering 400 the way Ollama does."""
    raw = await request.body()
    if not raw.strip():
        raise OllamaError(400, "missing request body")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OllamaError(400, f"invalid JSON: {error}") from error
    if not isinstance(data, dict):
        raise OllamaError(400, "the request body must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise OllamaError(400, _describe(error)) from error


async def _ollama_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, OllamaError)
    return OllamaJSONResponse({"error": error.message}, status_code=error.status)


async def _http_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 404:
        return PlainTextResponse("404 page not found", status_code=404)
    if error.status_code == 405:
        return PlainTextResponse("405 method not allowed", status_code=405)
    return OllamaJSONResponse({"error": str(error.detail)}, status_code=error.status_code)


async def _unexpected(_: Request, error: Exception) -> Response:
    log.error("unhandled_error", exc_info=error)
    return OllamaJSONResponse({"error": "internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OllamaError, _ollama_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
