"""Readiness: the gateway is ready when Redis and the three internal services are.

Checked at most every `max_age_s`, one check at a time whatever the traffic, so `/readyz` costs
nothing under load and cannot be used to make the gateway open connections to the LLM. The
public answer (through nginx) says ready or not; which part is down is only told on the
gateway's own port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

Check = Callable[[], Awaitable[bool]]


class Readiness:
    def __init__(self, checks: Mapping[str, Check], *, max_age_s: float = 2.0) -> None:
        self._checks = dict(checks)
        self._max_age_s = max_age_s
        self._results: dict[str, bool] = {}
        self._checked_at = float("-inf")
        self._refreshing: asyncio.Task[dict[str, bool]] | None = None

    async def current(self) -> dict[str, bool]:
        """Each check's result, at most `max_age_s` old."""
        if time.monotonic() - self._checked_at <= self._max_age_s:
            return self._results
        if self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh())
        return await asyncio.shield(self._refreshing)

    async def _refresh(self) -> dict[str, bool]:
        try:
            names = list(self._checks)
            outcomes = await asyncio.gather(*(self._checks[name]() for name in names))
            self._results = dict(zip(names, outcomes, strict=True))
            self._checked_at = time.monotonic()
            return self._results
        finally:
            self._refreshing = None
