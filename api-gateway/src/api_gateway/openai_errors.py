"""OpenAI's error shape for the OpenAI-compatible routes, with SDK-friendly retry hints.

`{"error": {"message", "type", "param", "code"}}`. An exhausted monthly quota is 429
`insufficient_quota` with `x-should-retry: false`, so SDKs do not retry it.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from infergate_common.errors import ErrorResponse, render_infergate_error

OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    429: "rate_limit_error",
}
_CODES = {
    "api_key_missing": "invalid_api_key",
    "invalid_api_key": "invalid_api_key",
    "rate_limited": "rate_limit_exceeded",
}


def is_openai_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in OPENAI_PATHS)


def openai_error(error: ErrorResponse) -> JSONResponse:
    status, body, headers = openai_error_parts(error)
    return JSONResponse(body, status, headers=headers)


def openai_error_parts(error: ErrorResponse) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers of an error in OpenAI's shape."""
    status, headers = error.status, dict(error.headers)
    error_type = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    code: str | None = _CODES.get(error.code, error.code)
    if error.code == "quota_exceeded":
        status, error_type, code = 429, "insufficient_quota", "insufficient_quota"
        headers["x-should-retry"] = "false"
    body = {"error": {"message": error.message, "type": error_type, "param": None, "code": code}}
    return status, body, headers


def render_gateway_error(request: Request, error: ErrorResponse) -> JSONResponse:
    """OpenAI's shape on the OpenAI-compatible routes, InferGate's everywhere else."""
    if is_openai_path(request.url.path):
        return openai_error(error)
    return render_infergate_error(request, error)
