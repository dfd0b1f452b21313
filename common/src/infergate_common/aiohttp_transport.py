"""An httpx transport over one keep-alive aiohttp session, for clients that must stay on httpx.

Some official clients (ollama's, for one) are built on httpx. The httpx client's own layer
(URLs, headers, redirects, hooks, decoding) costs a fraction of what httpcore's connection pool
costs: 0.7-2 ms of CPU per request on the 2-core target (see `wire.py`). This transport leaves
the httpx client as it is and sends its requests through aiohttp instead.

What it keeps of httpx's behaviour:

* The body is an `httpx.AsyncByteStream` that yields chunks as they arrive. Closing it before the
  end closes the connection, so the server sees the client leave (a model stops generating).
* Timeouts come from the request's `timeout` extension, with httpx's meaning. `read` limits the
  wait for each piece of data, not the whole answer (aiohttp's `sock_read`). `connect` limits
  opening a connection; `pool` plus `connect` limits waiting for a free connection and opening
  it (aiohttp times the two together). aiohttp has no write timeout; a request body goes to the
  socket buffer at once.
* The request goes out with httpx's headers only. httpx has already turned credentials in the
  URL into an `Authorization` header, so they are taken out of the URL aiohttp sees.
* aiohttp's failures are raised as the httpx exceptions that httpcore raises for the same event,
  so callers that translate httpx errors do not change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from functools import lru_cache

import aiohttp
import httpx

from infergate_common.tracing import SampledCallSessions


@lru_cache(maxsize=32)
def _client_timeout(
    connect: float | None, read: float | None, pool: float | None
) -> aiohttp.ClientTimeout:
    acquire = None if connect is None or pool is None else connect + pool
    return aiohttp.ClientTimeout(total=None, connect=acquire, sock_connect=connect, sock_read=read)


def _timeout_for(request: httpx.Request) -> aiohttp.ClientTimeout:
    spec: Mapping[str, float | None] = request.extensions.get("timeout") or {}
    return _client_timeout(spec.get("connect"), spec.get("read"), spec.get("pool"))


def as_httpx_error(exc: Exception, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception that httpcore would raise for what aiohttp reported."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        # aiohttp does not say whether the wait for a pool slot or the connect itself ran out.
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, TimeoutError):  # aiohttp.SocketTimeoutError: sock_read ran out
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, DNS
        return httpx.ConnectError(message, request=request)
    if isinstance(
        exc,
        aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError,
    ):
        # Closed before or during the answer, or not valid HTTP.
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message, request=request)
    return httpx.ReadError(message, request=request)  # resets and other socket errors


class AiohttpResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body as httpx reads it: chunks as they arrive, released on close."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise as_httpx_error(exc, self._request) from exc

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # back to the pool for the next request
        else:
            # Closing the socket is how the server learns the client left.
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp keep-alive pool (create it inside the running event loop), used through a
    traced session by sampled requests and a plain one by the rest (`SampledCallSessions`)."""

    def __init__(self, *, max_connections: int = 100, keepalive_seconds: float = 4.0) -> None:
        # Idle connections are dropped before a uvicorn server's 5 s keep-alive closes them.
        connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=keepalive_seconds)
        self._sessions = SampledCallSessions(
            lambda owner: aiohttp.ClientSession(
                connector=connector,
                connector_owner=owner,
                # The httpx client handles cookies, decompression and redirects itself.
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        url = request.url.copy_with(userinfo=b"") if request.url.userinfo else request.url
        try:
            response = await self._sessions.current().request(
                request.method,
                str(url),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                timeout=_timeout_for(request),
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise as_httpx_error(exc, request) from exc
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=AiohttpResponseStream(response, request),
            extensions={
                "http_version": b"HTTP/1.0"
                if response.version == aiohttp.HttpVersion10
                else b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("ascii", "replace"),
            },
        )

    async def aclose(self) -> None:
        await self._sessions.close()
