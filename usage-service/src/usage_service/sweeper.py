"""The sweeper: every RESERVATION_SWEEP_SECONDS, release the reservations whose gateway never
settled them in time. It must outlive any failure: a pass that fails is logged and the next one
runs as usual (a stopped database only delays the releases). It stops between passes, never in
the middle of one: a database call cancelled halfway could hold the client's connection."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import structlog

_log = structlog.get_logger("sweeper")


class Releases(Protocol):
    """What the sweeper drives: `Metering`."""

    async def release_expired(self) -> int: ...


class Sweeper:
    def __init__(self, metering: Releases, *, interval_s: float) -> None:
        self._metering = metering
        self._interval_s = interval_s
        self._stopping = asyncio.Event()
        self.passes = 0

    async def run(self) -> None:
        """Sweep every interval until `stop`."""
        while not await self._stopped_within(self._interval_s):
            await sweep_once(self._metering)
            self.passes += 1

    def stop(self) -> None:
        """Stop after the pass in progress, if any."""
        self._stopping.set()

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()


async def sweep_once(metering: Releases) -> int:
    """One pass; how many reservations it released (0 when it failed)."""
    try:
        return await metering.release_expired()
    except Exception:  # noqa: BLE001 - a sweeper that dies never releases anything again
        _log.exception("reservation_sweep_failed")
        return 0
