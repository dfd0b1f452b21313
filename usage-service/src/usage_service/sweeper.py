"""The sweeper: every RESERVATION_SWEEP_SECONDS, release the reservations whose gateway never
settled them in time. It must outlive any failure: a pass that fails is logged and the next one
runs as usual (a stopped database only delays the releases). It stops between passes, never in
the middle of one: a database call cancelled halfway could hold the client's connection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import structlog

from usage_service.telemetry import UsageMetrics

_log = structlog.get_logger("sweeper")


class Releases(Protocol):
    """What the sweeper drives: `Metering`."""

    async def release_expired(self) -> int: ...


class Sweeper:
    def __init__(
        self, metering: Releases, *, interval_s: float, metrics: UsageMetrics | None = None
    ) -> None:
        self._metering = metering
        self._interval_s = interval_s
        self._metrics = metrics
        self._stopping = asyncio.Event()
        self.passes = 0

    async def run(self) -> None:
        """Sweep every interval until `stop`."""
        while not await self._stopped_within(self._interval_s):
            await sweep_once(self._metering, self._metrics)
            self.passes += 1

    def stop(self) -> None:
        """Stop after the pass in progress, if any."""
        self._stopping.set()

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()


async def sweep_once(metering: Releases, metrics: UsageMetrics | None = None) -> int:
    """One pass; how many reservations it released (0 when it failed)."""
    try:
        released = await metering.release_expired()
    except Exception:  # noqa: BLE001 - a sweeper that dies never releases anything again
        _log.exception("reservation_sweep_failed")
        if metrics is not None:
            metrics.sweeper_runs.labels("error").inc()
        return 0
    if metrics is not None:
        metrics.sweeper_runs.labels("ok").inc()
        metrics.sweeper_last_success.set(time.time())
        metrics.sweeper_released.inc(released)
    return released
