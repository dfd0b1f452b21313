"""One pooled client per downstream service, and the one place its failures are translated.

Every outgoing request carries the current request id and the internal token, so no call site has
to remember them. Timeouts become 504, connection failures 503, and a downstream error body the
matching local error.
"""

from __future__ import annotations

import json as jsonlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pydantic import SecretStr

from infergate_common.balanced_wire import BalancedWire
from infergate_common.errors import (
    AppError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    error_for_status,
)
from infergate_common.internal_auth import INTERNAL_TOKEN_HEADER
from infergate_common.metrics import InternalCallMetrics
from infergate_common.wire import (
    AiohttpWire,
    HttpxWire,
    Wire,
    WireTimeoutError,
    WireUnavailableError,
)


def build_internal_client(
    *,
    base_url: str,
    internal_token: SecretStr,
    timeout: float,
    max_connections: int = 100,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Wire:
    """A keep-alive connection pool to one internal service (call inside the event loop).
    `base_url` may list several replicas, comma-separated: they share the work (see
    balanced_wire)."""
    headers = {INTERNAL_TOKEN_HEADER: internal_token.get_secret_value()}
    urls = replica_urls(base_url)

    def one(url: str) -> Wire:
        if transport is not None:
            return HttpxWire(base_url=url, headers=headers, seconds=timeout, transport=transport)
        return AiohttpWire(
            base_url=url, headers=headers, seconds=timeout, max_connections=max_connections
        )

    return one(urls[0]) if len(urls) == 1 else BalancedWire([one(url) for url in urls])


def replica_urls(setting: str) -> list[str]:
    """The URLs of a service's replicas from a setting such as `http://a:4001,http://b:4001`."""
    urls = [url.strip().rstrip("/") for url in setting.split(",") if url.strip()]
    if not urls:
        raise ValueError("a service URL is required")
    return urls


class InternalServiceClient:
    """Base for the typed clients of one internal service; translates its failures once."""

    service: str = "internal service"
    timeout_message: str | None = None

    def __init__(self, wire: Wire, *, metrics: InternalCallMetrics | None = None) -> None:
        self._wire = wire
        self._metrics = metrics

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        call_timeout: float | None = None,
        affinity: str | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON body, or raise the matching AppError.
        Requests with the same `affinity` go to the same replica while it is up."""
        started = time.perf_counter()
        try:
            response = await self._wire.send(
                method, path, json=json, params=params, seconds=call_timeout, affinity=affinity
            )
        except WireTimeoutError as exc:
            self._observe(started, failure="timeout")
            raise self._timed_out() from exc
        except WireUnavailableError as exc:
            self._observe(started, failure="unavailable")
            raise UpstreamUnavailableError(f"{self.service} unavailable") from exc
        self._observe(started, failure="status" if response.status >= 500 else None)
        if response.status >= 400:
            raise self.translate_error(response.status, response.body)
        try:
            return jsonlib.loads(response.body)
        except ValueError as exc:
            raise UpstreamUnavailableError(f"{self.service} sent an invalid response") from exc

    @asynccontextmanager
    async def stream_lines(
        self, path: str, *, json: Any, affinity: str | None = None
    ) -> AsyncIterator[AsyncIterator[Any]]:
        """POST and yield the decoded NDJSON lines of the answer; errors before it are raised."""
        started = time.perf_counter()
        try:
            async with self._wire.stream(path, json=json, affinity=affinity) as response:
                # A stream's call lasts until its answer starts: what follows is the model's.
                failed = response.status >= 500
                self._observe(started, failure="status" if failed else None)
                if response.status >= 400:
                    body = b"".join([chunk async for chunk in response.chunks])
                    raise self.translate_error(response.status, body)
                yield _decoded_lines(response.chunks)
        except WireTimeoutError as exc:
            self._observe(started, failure="timeout")
            raise self._timed_out() from exc
        except WireUnavailableError as exc:
            self._observe(started, failure="unavailable")
            raise UpstreamUnavailableError(f"{self.service} unavailable") from exc

    def route(self, affinity: str) -> int:
        """The replica that requests with this affinity go to now (0 with one replica)."""
        return self._wire.route(affinity)

    def _observe(self, started: float, *, failure: str | None) -> None:
        if self._metrics is None:
            return
        outcome = "ok" if failure is None else "error"
        self._metrics.duration.labels(self.service, outcome).observe(time.perf_counter() - started)
        if failure is not None:
            self._metrics.errors.labels(self.service, failure).inc()

    def _timed_out(self) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(self.timeout_message or f"{self.service} timed out")

    def translate_error(self, status: int, content: bytes) -> AppError:
        try:
            body = jsonlib.loads(content)
        except ValueError:
            body = {}
        message = body.get("message") if isinstance(body, dict) else None
        code = body.get("code") if isinstance(body, dict) else None
        if status == 401 and code == "internal_auth_failed":
            # Our own misconfiguration: the caller's credentials are not at fault.
            return UpstreamUnavailableError(f"{self.service} refused the internal token")
        if status == 504:
            return UpstreamTimeoutError(message or f"{self.service} timed out", code=code)
        if status >= 500:
            return UpstreamUnavailableError(
                message or f"{self.service} unavailable", code=code or "upstream_unavailable"
            )
        return error_for_status(status, message or f"{self.service} error", code, _figures(body))


def _figures(body: object) -> dict[str, int]:
    """The integer fields of a downstream error body (figures such as a refused chat's tokens)."""
    if not isinstance(body, dict):
        return {}
    return {
        str(name): value
        for name, value in body.items()
        if isinstance(value, int) and not isinstance(value, bool)
    }


async def _decoded_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield jsonlib.loads(line)
    if pending.strip():
        yield jsonlib.loads(pending)
