"""structlog configured once: JSON lines in containers and CI, console output on a terminal.

InferGate's own lines (structlog) are rendered and written straight to stderr, level-filtered
before any work (about a third of the cost of a line through the standard library's logging
machinery). uvicorn's, httpx's and pymongo's standard-library loggers go through a formatter
with the same processors, so every line a service prints has one shape and carries the bound
request id. When the process traces
(see `tracing.py`), a line written inside a recorded trace also carries its `trace_id` and
`span_id` (hex, as trace backends show them), next to `request_id`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from opentelemetry import trace

from infergate_common.settings import LogFormat

_NOISY_LOGGERS = {"httpx": logging.WARNING, "httpcore": logging.WARNING, "pymongo": logging.WARNING}


def _uppercase_level(_: Any, __: str, event_dict: structlog.typing.EventDict) -> Any:
    level = event_dict.get("level")
    if isinstance(level, str):
        event_dict["level"] = level.upper()
    return event_dict


def add_trace_ids(_: Any, __: str, event_dict: structlog.typing.EventDict) -> Any:
    """The current span's ids when its trace is recorded (sampled); a line outside any traced
    request gets none. Sampled, not `is_recording()`: the server span ends with the response,
    before the access line is written, and that line belongs to the trace too."""
    context = trace.get_current_span().get_span_context()
    if context.trace_flags.sampled:
        event_dict["trace_id"] = trace.format_trace_id(context.trace_id)
        event_dict["span_id"] = trace.format_span_id(context.span_id)
    return event_dict


def configure_logging(
    *, service: str, level: str = "info", fmt: LogFormat = "auto", trace_ids: bool = False
) -> None:
    """Configure structlog and the standard library root logger for this process.

    `trace_ids`: add the current span's ids to each line (only when the process traces)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())

    def add_service(_: Any, __: str, event_dict: structlog.typing.EventDict) -> Any:
        event_dict.setdefault("service", service)
        return event_dict

    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        *([add_trace_ids] if trace_ids else []),
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
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
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
