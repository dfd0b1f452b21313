"""The wire under the internal clients: aiohttp in production, any httpx transport in tests.

aiohttp, not httpx, carries the services' own traffic: measured on the 2-core target, httpx's
connection pool costs 0.7-2 ms of CPU per request (growing with concurrency), aiohttp about
0.1 ms, and the gateway makes four internal calls per chat. The httpx wire stays so that unit
tests can replace the other services at the HTTP edge with `httpx.MockTransport`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx

from infergate_common.request_context import REQUEST_ID_HEADER, current_request_id
from infergate_common.tracing import SampledCallSessions, propagate_unsampled


class WireTimeoutError(Exception):
    """The other side did not answer in time."""


class WireUnavailableError(Exception):
    """The other side could not be reached (refused, reset, closed early)."""


class WireRefusedError(WireUnavailableError):
    """No connection could be made: the request never left, so another replica may take it."""


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class RawStream:
    status: int
    chunks: AsyncIterator[bytes]  # the body as it arrives, in pieces of any size


class Wire(Protocol):
    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, str] | None,
        seconds: float | None,
        affinity: str | None = None,
    ) -> RawResponse: ...

    def stream(
        self, path: str, *, json: Any, affinity: str | None = None
    ) -> AbstractAsyncContextManager[RawStream]: ...

    def route(self, affinity: str) -> int:
        """Which replica requests with this affinity go to while it is up (0 for one replica)."""
        ...

    async def close(self) -> None: ...


@contextmanager
def _aiohttp_errors() -> Iterator[None]:
    """aiohttp's failures as the wire's: timeout, refused (never sent), unavailable."""
    try:
        yield
    except TimeoutError as exc:
        raise WireTimeoutError from exc
    except aiohttp.ClientConnectorError as exc:
        raise WireRefusedError from exc
    except aiohttp.ClientError as exc:
        raise WireUnavailableError from exc


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpx's failures as the wire's (the same three)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise WireTimeoutError from exc
    except httpx.ConnectError as exc:
        raise WireRefusedError from exc
    except httpx.TransportError as exc:
        raise WireUnavailableError from exc


def _request_headers() -> dict[str, str]:
    request_id = current_request_id()
    headers = {REQUEST_ID_HEADER: request_id} if request_id is not None else {}
    propagate_unsampled(headers)
    return headers


class AiohttpWire:
    """One keep-alive aiohttp connection pool for one service (create it inside the event loop),
    used through a traced session by sampled requests and a plain one by the rest."""

    def __init__(
        self, *, base_url: str, headers: Mapping[str, str], seconds: float, max_connections: int
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=seconds, connect=min(seconds, 2.0))
        # Idle connections are dropped before uvicorn's 5 s keep-alive closes them, so a
        # request never goes out on a connection the server is closing.
        connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=4.0)
        self._sessions = SampledCallSessions(
            lambda owner: aiohttp.ClientSession(
                base_url=base_url,
                headers=dict(headers),
                timeout=self._timeout,
                connector=connector,
                connector_owner=owner,
            )
        )

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, str] | None,
        seconds: float | None,
        affinity: str | None = None,
    ) -> RawResponse:
        timeout = self._timeout if seconds is None else aiohttp.ClientTimeout(total=seconds)
        with _aiohttp_errors():
            async with self._sessions.current().request(
                method,
                path,
                json=json,
                params=params,
                headers=_request_headers(),
                timeout=timeout,
            ) as response:
                return RawResponse(response.status, await response.read())

    @asynccontextmanager
    async def stream(
        self, path: str, *, json: Any, affinity: str | None = None
    ) -> AsyncIterator[RawStream]:
        with _aiohttp_errors():
            async with self._sessions.current().post(
                path, json=json, headers=_request_headers()
            ) as response:
                yield RawStream(response.status, response.content.iter_any())

    def route(self, affinity: str) -> int:
        return 0

    async def close(self) -> None:
        await self._sessions.close()


class HttpxWire:
    """The same contract over httpx (for an injected transport, such as MockTransport)."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        seconds: float,
        transport: httpx.AsyncBaseTransport,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, headers=dict(headers), timeout=seconds, transport=transport
        )

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, str] | None,
        seconds: float | None,
        affinity: str | None = None,
    ) -> RawResponse:
        with _httpx_errors():
            response = await self._client.request(
                method,
                path,
                json=json,
                params=params,
                headers=_request_headers(),
                timeout=httpx.USE_CLIENT_DEFAULT if seconds is None else seconds,
            )
        return RawResponse(response.status_code, response.content)

    @asynccontextmanager
    async def stream(
        self, path: str, *, json: Any, affinity: str | None = None
    ) -> AsyncIterator[RawStream]:
        with _httpx_errors():
            async with self._client.stream(
                "POST", path, json=json, headers=_request_headers()
            ) as response:
                yield RawStream(response.status_code, response.aiter_bytes())

    def route(self, affinity: str) -> int:
        return 0

    async def close(self) -> None:
        await self._client.aclose()
