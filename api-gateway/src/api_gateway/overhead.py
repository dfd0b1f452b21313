"""The gateway's added latency on chats: the request's time minus the model call's.

The chat records how long it waited on the model (`ModelTime`, in the request's scope); this
pure ASGI middleware, outside the routes, measures the whole request around it. A plain answer
carries the figure in `x-infergate-overhead-ms` (like peers' overhead headers); every chat's goes
to `infergate_gateway_overhead_seconds` once its response has ended.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_gateway.telemetry import ModelTime

OVERHEAD_HEADER = b"x-infergate-overhead-ms"
_STATE_KEY = "model_time"


def track_model_time(scope: Scope) -> ModelTime:
    """A request's ModelTime (made by the chat turn of the request)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    model_time = ModelTime()
    state[_STATE_KEY] = model_time
    return model_time


class OverheadMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_with_overhead(message: Message) -> None:
            if message["type"] == "http.response.start":
                added = _added(scope, started)
                if added is not None and not added[1]:
                    value = f"{added[0] * 1000:.2f}".encode()
                    message["headers"] = [*message.get("headers", []), (OVERHEAD_HEADER, value)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_overhead)
        finally:
            added = _added(scope, started)
            if added is not None:
                resources = scope["state"]["resources"]
                mode = "stream" if added[1] else "complete"
                resources.telemetry.metrics.overhead.labels(mode).observe(added[0])


def _added(scope: Scope, started: float) -> tuple[float, bool] | None:
    """Seconds the gateway added so far, and whether it streams; None for requests that did
    not call the model."""
    model_time = scope.get("state", {}).get(_STATE_KEY)
    if not isinstance(model_time, ModelTime) or model_time.seconds is None:
        return None
    added = time.perf_counter() - started - model_time.seconds
    return max(added, 0.0), model_time.streamed
