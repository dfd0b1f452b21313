"""`python -m infergate_local_llm --host 127.0.0.1 --port 11434 [--alias llama3]`."""

from __future__ import annotations

import threading
from types import FrameType

import uvicorn

from infergate_local_llm.app import create_app
from infergate_local_llm.config import load_config
from infergate_local_llm.logs import configure_logging


class _Server(uvicorn.Server):
    """Stops generation as soon as the shutdown signal arrives.

    uvicorn waits for open connections before the lifespan's shutdown runs; without this a
    stream in progress would be cut only after the graceful timeout, with a traceback. With it,
    the stream ends at once with Ollama's error line and the connection closes normally.
    """

    def __init__(self, config: uvicorn.Config, *, stopping: threading.Event) -> None:
        super().__init__(config)
        self._stopping = stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._stopping.set()
        super().handle_exit(sig, frame)


def main() -> None:
    config = load_config()
    configure_logging(level=config.log_level, fmt=config.log_format)
    stopping = threading.Event()
    server_config = uvicorn.Config(
        create_app(config, stopping=stopping),
        host=config.host,
        port=config.port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    _Server(server_config, stopping=stopping).run()


if __name__ == "__main__":
    main()
