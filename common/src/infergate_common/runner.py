"""Running a service under uvicorn with its settings (the `python -m <service>` entry point)."""

from __future__ import annotations

import uvicorn

from infergate_common.settings import ServiceSettings


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
        http="httptools",
        timeout_graceful_shutdown=30,
        server_header=False,
    )
