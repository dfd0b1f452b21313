"""Fixtures of the devstack tests: a stand-in Ollama that only answers the banner."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _BannerHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"Ollama is running"
        self.send_response(200)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read responses, not this server's access log."""


@pytest.fixture(scope="session")
def ollama_banner() -> Iterator[str]:
    """URL of a server whose root answers like Ollama's (enough for the stack to choose it)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BannerHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
