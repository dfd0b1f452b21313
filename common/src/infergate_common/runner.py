"""Running a service under uvicorn with its settings (the `python -m <service>` entry point)."""

from __future__ import annotations

import json
import math

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from infergate_common.errors import error_body
from infergate_common.settings import ServiceSettings


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, except that a request it cannot parse (a control character
    in a header value, which nginx passes on) gets the JSON error body, not a plain-text 400."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(error_body(msg, "bad_request")).encode()
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\n" + head + b"\r\n" + body)
        self.transport.close()


def serve(factory: str, settings: ServiceSettings, *, workers: int = 1) -> None:
    """Run `factory` (a `module:create_app` path) on the configured host and port."""
    uvicorn.run(
        factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http=JsonErrorHttpToolsProtocol,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
        server_header=False,
    )
