"""A webhook receiver for tests: keeps every request it is sent, and answers what the test says.

A stdlib server on its own thread on a free loopback port (the services send from their own
processes, or from the test's event loop, at any moment). By default it answers 204; a test can
have it fail the next requests (`fail_next`), answer a redirect, or hold requests unanswered
until released (`hold`). Tests wait on what arrived with `wait_for` (polling, with a deadline):

    with WebhookReceiver() as receiver:
        receiver.fail_next(3)
        ...
        got = await receiver.wait_for(lambda got: len(receiver.delivered()) == 1)

`expected_signature` recomputes a Standard Webhooks signature on its own (not with the service's
code), so a test that compares it with the header checks the service's signing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.started import Started


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what the receiver answered

    @property
    def event(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded


def expected_signature(secret: str, *, msg_id: str, timestamp: str, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of "{id}.{timestamp}.{body}", keyed by a `whsec_` secret's
    decoded bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookReceiver(Started):
    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._answers: list[int] = []
        self._released = threading.Event()
        self._released.set()
        self.redirect_to = "/elsewhere"
        self.received: list[Received] = []  # answered
        self.held: list[Received] = []  # arrived while held (never answered)
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, count: int, *, status: int = 500) -> None:
        """Answer `status` to the next `count` requests."""
        with self._lock:
            self._answers.extend([status] * count)

    def succeed(self) -> None:
        """Answer 204 from now on (the failures still to come are dropped)."""
        with self._lock:
            self._answers.clear()

    def hold(self) -> None:
        """From now until `release`, keep requests unanswered (and out of `received`)."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def delivered(self) -> list[Received]:
        """The requests answered 2xx."""
        return [r for r in self.requests() if 200 <= r.status < 300]

    async def wait_for(
        self, ready: Callable[[list[Received]], bool], *, timeout_s: float = 15.0
    ) -> list[Received]:
        """The requests received, once `ready(requests)` holds (AssertionError at the deadline)."""
        deadline = time.monotonic() + timeout_s
        while not ready(got := self.requests()):
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver did not get what was expected: {got}")
            await asyncio.sleep(0.05)
        return got

    def _answer(self) -> int:
        with self._lock:
            return self._answers.pop(0) if self._answers else 204

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                if not receiver._released.is_set():  # held: never answered
                    with receiver._lock:
                        receiver.held.append(Received(self.path, headers, body, 0))
                    receiver._released.wait(timeout=60)
                    self.close_connection = True
                    return
                status = receiver._answer()
                with receiver._lock:
                    receiver.received.append(Received(self.path, headers, body, status))
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("location", receiver.redirect_to)
                self.send_header("content-length", "0")
                self.end_headers()

            do_GET = do_PUT = do_POST  # recorded too: a sender that follows a 302 sends a GET

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return Handler


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    """A module's receiver (import it into the test module to use it as a fixture)."""
    with WebhookReceiver() as running:
        yield running


def delivery_env(receiver: WebhookReceiver) -> dict[str, str]:
    """usage-service settings for stacks whose webhooks go to `receiver`: allowed although it is
    on loopback, and retried, polled and timed out quickly."""
    return {
        "QUOTA_WEBHOOK_ALLOWED_HOSTS": f"127.0.0.1:{receiver.port}",
        "QUOTA_WEBHOOK_RETRY_SECONDS": "0.2",
        "QUOTA_WEBHOOK_POLL_SECONDS": "0.1",
        "QUOTA_WEBHOOK_TIMEOUT_SECONDS": "1",
    }
