"""Request ids and the access log: a pure ASGI middleware shared by every service.

The id comes from the caller's `x-request-id` when it is safe (at most 128 characters of
`[A-Za-z0-9._-]`), otherwise a new one is made. It is bound to structlog's context, kept in a
ContextVar for outgoing calls, echoed on the response, and written on one access line.
"""

from __future__ import annotations

import re
import time
import uuid
from contextvars import ContextVar

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infergate_common.metrics import HttpMetrics, status_class

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_QUIET_PATHS = frozenset({"/health", "/healthz", "/readyz", "/metrics"})
# Methods as labels: any other token a client sends is counted as "other" (bounded series).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_log = structlog.get_logger("access")


def current_request_id() -> str | None:
    """The id of the request being handled in this task, if any."""
    return _request_id.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(candidate: str | None) -> str:
    """Return the caller's id when it is safe to log and forward, else a fresh one."""
    if candidate is not None and _VALID_REQUEST_ID.fullmatch(candidate):
        return candidate
    return new_request_id()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RequestContextMiddleware:
    """Bind the request id, echo it, write one access line per HTTP request, and count it."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics | None, service: str) -> None:
        self.app = app
        self.metrics = metrics
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(_header(scope, REQUEST_ID_HEADER.encode()))
        token = _request_id.set(request_id)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k != REQUEST_ID_HEADER.encode()
                ]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            path = scope.get("path", "")
            log = _log.debug if path in _QUIET_PATHS and status < 400 else _log.info
            log(
                "request",
                method=scope.get("method"),
                path=path,
                status=status,
                duration_ms=round(seconds * 1000, 2),
            )
            if self.metrics is not None:
                self._count(self.metrics, scope, status, seconds)
            structlog.contextvars.clear_contextvars()
            _request_id.reset(token)

    def _count(self, metrics: HttpMetrics, scope: Scope, status: int, seconds: float) -> None:
        # The route's template (bounded), never the raw path.
        route = getattr(scope.get("route"), "path", "unmatched")
        method = scope.get("method", "")
        method = method if method in _METHODS else "other"
        labels = (self.service, route, method)
        metrics.requests.labels(*labels, status_class(status)).inc()
        metrics.duration.labels(*labels).observe(seconds)
