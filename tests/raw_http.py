"""HTTP/1.1 over a plain socket, for requests no well-behaved client will send (httpx refuses CR
and LF in header values, for one): the bytes go out exactly as given."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def parse_response(raw: bytes) -> RawResponse | None:
    """The first response in `raw`, or None when the server closed without answering."""
    if not raw:
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return RawResponse(int(status_line.split()[1]), headers, body)


async def send_raw(url: str, data: bytes, *, timeout_s: float = 10.0) -> RawResponse | None:
    """Send `data` on a new connection and read until the server closes it (send
    `Connection: close`). None when the server closed the connection without a response."""
    reader, writer = await asyncio.open_connection(*address(url))
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
    return parse_response(raw)


def request_bytes(
    method: str, path: str, headers: list[bytes] | None = None, body: bytes = b""
) -> bytes:
    """A request with Host, Connection: close and Content-Length, plus raw header lines."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: infergate", b"Connection: close"]
    if body:
        lines.append(f"Content-Length: {len(body)}".encode())
    lines += headers or []
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
