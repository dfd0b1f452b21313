"""The log lines a service writes: one JSON shape for InferGate's own lines and the standard
library's (uvicorn, pymongo), the level applied to both, the bound request id on each."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

_PROGRAM = textwrap.dedent(
    """
    import logging, structlog
    from infergate_common.logs import configure_logging
    configure_logging(service="svc", level=LEVEL, fmt="json")
    structlog.contextvars.bind_contextvars(request_id="r-1")
    log = structlog.get_logger("access")
    log.debug("own_debug")
    log.info("own_info", status=200)
    log.warning("own_warning")
    logging.getLogger("uvicorn.error").info("library_info %s", 1)
    logging.getLogger("uvicorn.error").warning("library_warning %s", 2)
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("own_failure")
    """
)


def _lines(level: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", f"LEVEL = {level!r}\n{_PROGRAM}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == ""
    return [json.loads(line) for line in done.stderr.splitlines()]


def test_own_and_library_lines_share_one_json_shape_with_the_request_id() -> None:
    lines = {line["event"]: line for line in _lines("info")}
    assert set(lines) == {
        "own_info",
        "own_warning",
        "library_info 1",
        "library_warning 2",
        "own_failure",
    }
    for line in lines.values():
        assert line["service"] == "svc"
        assert line["request_id"] == "r-1"
        assert line["time"].endswith("Z")
    assert lines["own_info"]["level"] == "INFO"
    assert lines["own_info"]["status"] == 200
    assert lines["library_warning 2"]["level"] == "WARNING"
    assert lines["own_failure"]["level"] == "ERROR"
    assert "ZeroDivisionError" in lines["own_failure"]["exception"]


def test_the_level_applies_to_own_and_library_lines() -> None:
    at_warning = {line["event"] for line in _lines("warning")}
    assert at_warning == {"own_warning", "library_warning 2", "own_failure"}
    at_debug = {line["event"] for line in _lines("debug")}
    assert {"own_debug", "own_info", "library_info 1"} <= at_debug
