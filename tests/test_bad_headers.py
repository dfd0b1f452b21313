"""Hostile headers and slow clients at nginx: each gets a 4xx JSON error or a closed connection,
never a 500, never a hang, and nothing a client injects comes back as a response header."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
from infergate_devstack.stack import Stack

from tests.raw_http import RawResponse, address, request_bytes, send_raw

SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def assert_json_error(response: RawResponse | None, status: int) -> None:
    assert response is not None, "nginx closed the connection without an answer"
    assert response.status == status
    assert response.header_values("content-type") == ["application/json"]
    assert set(json.loads(response.body)) == {"message", "code", "requestId"}


@pytest.mark.parametrize(
    "header",
    [
        b"X-Request-ID: abc\rdef",  # a bare CR inside the value
        b"X-Request-ID: abc\x00def",
        b"X-Request-ID: abc\r\n\tdef",  # obsolete line folding
        b"X-Request-ID: abc\r\n: no-name",
    ],
    ids=["bare-cr", "nul", "folded", "empty-name"],
)
async def test_a_malformed_request_id_header_is_a_400_json_from_nginx(
    stack: Stack, header: bytes
) -> None:
    response = await send_raw(stack.public_url, request_bytes("GET", "/health", [header]))
    assert_json_error(response, 400)


# These got an HTML 500 from nginx (its JSON error pages were named locations, which an error
# found before the request line is parsed cannot be redirected to), or a plain-text 400 from
# uvicorn (a control character in a header value, which nginx passes on).
@pytest.mark.parametrize(
    ("request_line", "header", "status"),
    [
        (b"GARBAGE", b"X-A: 1", 400),
        (b"GET /a b HTTP/1.1", b"X-A: 1", 400),
        (b"GET /\x01 HTTP/1.1", b"X-A: 1", 400),
        (b"GET /health HTTP/9.9", b"X-A: 1", 505),
        (b"GET /health HTTP/1.1", b"X-Anything: a\x7fb", 400),
        (b"GET /v1/usage HTTP/1.1", b"Authorization: Bearer \x7f", 400),
        (b"GET /v1/usage?" + b"q" * 10_000 + b" HTTP/1.1", b"X-A: 1", 414),
    ],
    ids=["garbage", "spaces", "control-char", "http-9", "del-in-header", "del-in-bearer", "long"],
)
async def test_a_malformed_request_gets_a_json_error(
    stack: Stack, request_line: bytes, header: bytes, status: int
) -> None:
    data = request_line + b"\r\nHost: infergate\r\nConnection: close\r\n" + header + b"\r\n\r\n"
    assert_json_error(await send_raw(stack.public_url, data), status)


@pytest.mark.parametrize(
    "header",
    [
        b"X-Request-ID: evil\r\nSet-Cookie: injected=1",
        b"X-Request-ID: evil\nSet-Cookie: injected=1",  # a bare LF ends the line for nginx
        b"X-Request-ID: evil%0d%0aSet-Cookie:%20injected=1",
        b"X-Request-ID: evil\xe2\x80\xa8Set-Cookie: injected=1",  # U+2028 in UTF-8
    ],
    ids=["crlf", "bare-lf", "percent-encoded", "unicode-line-separator"],
)
async def test_a_request_id_cannot_inject_response_headers(stack: Stack, header: bytes) -> None:
    response = await send_raw(stack.public_url, request_bytes("GET", "/health", [header]))
    assert response is not None
    assert response.status in {200, 400}
    assert response.header_values("set-cookie") == []
    (echoed,) = response.header_values("x-request-id")
    assert SAFE_REQUEST_ID.fullmatch(echoed)


async def test_a_10_kb_request_id_is_a_400_json_from_nginx(api: httpx.AsyncClient) -> None:
    response = await api.get("/health", headers={"x-request-id": "a" * 10_240})
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"
    assert SAFE_REQUEST_ID.fullmatch(response.headers["x-request-id"])


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": "sk_" + "a" * 9_000},
        {"x-filler": "b" * 9_000},
        {f"x-filler-{i}": "c" * 4_000 for i in range(12)},
    ],
    ids=["huge-key", "one-huge-header", "many-large-headers"],
)
async def test_oversized_headers_are_a_400_json_from_nginx(
    api: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await api.get("/v1/usage", headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"


async def test_an_oversized_uri_is_a_414_json_from_nginx(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/usage?" + "q=" + "d" * 10_000)
    assert response.status_code == 414
    assert response.json()["code"] == "uri_too_long"


@pytest.mark.parametrize(
    "key",
    [b"sk_" + b"k" * 4_000, b"sk_\xff\xfe\xfd", b"\xc3\xa9t\xc3\xa9", b"sk_\x7f", b'{"$ne": null}'],
    ids=["long", "latin1-bytes", "utf8", "del", "operator"],
)
async def test_a_strange_api_key_is_refused_with_a_4xx_json(stack: Stack, key: bytes) -> None:
    request = request_bytes("GET", "/v1/usage", [b"x-api-key: " + key])
    response = await send_raw(stack.public_url, request)
    assert response is not None
    assert response.status in {400, 401}
    assert json.loads(response.body)["code"] in {
        "bad_request",
        "invalid_api_key",
        "validation_error",
    }


async def test_a_client_sending_its_headers_too_slowly_is_cut_off(stack: Stack) -> None:
    """Slowloris: headers trickled a byte a second. nginx's client_header_timeout (10 s) counts
    from the first byte, so the connection ends (reset, closed, or a 408) well within 15 s."""
    reader, writer = await asyncio.open_connection(*address(stack.public_url))

    async def trickle() -> None:
        writer.write(b"GET /v1/usage HTTP/1.1\r\nHost: infergate\r\nX-Slow: ")
        for _ in range(30):
            await asyncio.sleep(1)
            writer.write(b"z")
            await writer.drain()

    trickler = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=15)
    except ConnectionResetError:
        answer = b""  # reset_timedout_connection: nginx drops it with a RST
    finally:
        trickler.cancel()
        writer.close()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
