"""Running a service under uvicorn with its settings (the `python -m <service>` entry point)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import TypeVar

import uvicorn
from pydantic import ValidationError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from infergate_common.errors import error_body
from infergate_common.settings import ServiceSettings

S = TypeVar("S")


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


def settings_or_exit(service: str, load: Callable[[], S]) -> S:
    """The service's settings; an invalid one ends the process with one line per problem that
    names the variable and the rule (exit status 2), not a traceback."""
    try:
        return load()
    except ValidationError as exc:
        for line in invalid_settings(exc):
            print(f"{service}: invalid setting: {line}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def invalid_settings(exc: ValidationError) -> list[str]:
    """`VARIABLE: what is wrong` for each error (a setting's variable is its name upper-cased)."""
    lines = []
    for error in exc.errors():
        variable = "_".join(str(part) for part in error.get("loc", ())).upper() or "(settings)"
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        lines.append(message if message.startswith(variable) else f"{variable}: {message}")
    return lines


def serve(factory: str, load_settings: Callable[[], ServiceSettings], *, workers: int = 1) -> None:
    """Run `factory` (a `module:create_app` path) on the configured host and port."""
    settings = settings_or_exit(factory.split(".")[0].replace("_", "-"), load_settings)
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
        # No X-Forwarded-* rewriting: nothing reads the peer address from it (the gateway takes
        # nginx's X-Real-IP itself), and it is one middleware less on every request.
        proxy_headers=False,
    )
