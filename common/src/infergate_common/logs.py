"""structlog configured once: JSON lines in containers and CI, console output on a terminal.

uvicorn's, httpx's and pymongo's standard-library loggers go through the same formatter, so every
line a service prints has one shape and carries the bound request id.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from infergate_common.settings import LogFormat

_NOISY_LOGGERS = {"httpx": logging.WARNING, "httpcore": logging.WARNING, "pymongo": logging.WARNING}


def _uppercase_level(_: Any, __: str, event_dict: structlog.typing.EventDict) -> Any:
    level = event_dict.get("level")
    if isinstance(level, str):
        event_dict["level"] = level.upper()
    return event_dict


def configure_logging(*, service: str, level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog and the standard library root logger for this process."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())

    def add_service(_: Any, __: str, event_dict: structlog.typing.EventDict) -> Any:
        event_dict.setdefault("service", service)
        return event_dict

    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _uppercase_level,
        add_service,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The request middleware writes the access line; uvicorn's own would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
    for name, noisy_level in _NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(max(noisy_level, root.level))
