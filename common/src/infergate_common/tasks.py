"""Stopping a background task for sure.

`Task.cancel()` is a single request: a library that catches the CancelledError and raises its own
timeout error instead (an old `async_timeout` racing its own deadline, in a client's read) hands
a retry loop an ordinary error, the loop goes on, and whoever awaits the task waits forever. A
service that stops its loops that way hangs in shutdown under load. So: cancel, and cancel again
while the task is still running, for a bounded time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

_log = structlog.get_logger("tasks")


async def cancel_and_wait(task: asyncio.Task[Any], *, timeout_s: float = 5.0) -> None:
    """Cancel `task` until it has finished (at most `timeout_s`); never raises its outcome."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done():
        if loop.time() > deadline:
            _log.warning("task_did_not_stop", task=task.get_name())
            return
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        _log.warning("task_failed", task=task.get_name(), error=str(task.exception()))
