"""One pooled httpx client per downstream service, and the one place its failures are translated.

Every outgoing request carries the current request id and the internal token, so no call site has
to remember them. Timeouts become 504, connection failures 503, and a downstream error body the
matching local error.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pydantic import SecretStr

from infergate_common.errors import (
    AppError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    error_for_status,
)
from infergate_common.internal_auth import INTERNAL_TOKEN_HEADER
from infergate_common.request_context import REQUEST_ID_HEADER, current_request_id


async def _stamp_request_id(request: httpx.Request) -> None:
    request_id = current_request_id()
    if request_id is not None:
        request.headers[REQUEST_ID_HEADER] = request_id


def build_internal_client(
    *,
    base_url: str,
    internal_token: SecretStr,
    timeout: float,
    max_connections: int = 200,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """A keep-alive client for one internal service."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        headers={INTERNAL_TOKEN_HEADER: internal_token.get_secret_value()},
        event_hooks={"request": [_stamp_request_id]},
        transport=transport,
    )


class InternalServiceClient:
    """Base for the typed clients of one internal service; translates its failures once."""

    service: str = "internal service"
    timeout_message: str | None = None

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        call_timeout: float | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON body, or raise the matching AppError."""
        try:
            response = await self._http.request(
                method,
                path,
                json=json,
                params=params,
                timeout=httpx.USE_CLIENT_DEFAULT if call_timeout is None else call_timeout,
            )
        except httpx.TimeoutException as exc:
            raise UpstreamTimeoutError(self.timeout_message or f"{self.service} timed out") from exc
        except httpx.TransportError as exc:
            raise UpstreamUnavailableError(f"{self.service} unavailable") from exc
        if response.status_code >= 400:
            raise self.translate_error(response)
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamUnavailableError(f"{self.service} sent an invalid response") from exc

    @asynccontextmanager
    async def stream_lines(self, path: str, *, json: Any) -> AsyncIterator[AsyncIterator[Any]]:
        """POST and yield the decoded NDJSON lines of the answer; errors before it are raised."""
        try:
            async with self._http.stream("POST", path, json=json) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self.translate_error(response)
                yield _decoded_lines(response)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeoutError(self.timeout_message or f"{self.service} timed out") from exc
        except httpx.TransportError as exc:
            raise UpstreamUnavailableError(f"{self.service} unavailable") from exc

    def translate_error(self, response: httpx.Response) -> AppError:
        status = response.status_code
        try:
            body = response.json()
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
        return error_for_status(status, message or f"{self.service} error", code)


async def _decoded_lines(response: httpx.Response) -> AsyncIterator[Any]:
    async for line in response.aiter_lines():
        if line:
            yield jsonlib.loads(line)
