"""Tools of the fault tests: a steady background load of chats, and the token audit."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from pymongo import AsyncMongoClient

# What a user may see while something is down: never a 500, never an HTML page.
ALLOWED_DURING_FAULTS = {200, 503, 504}


@dataclass
class Load:
    """Chats sent back to back by a few workers until stopped; every answer is recorded."""

    base_url: str
    keys: list[str]
    statuses: Counter[int] = field(default_factory=Counter)
    not_json: int = 0
    slowest_s: float = 0.0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Load:
        self._tasks = [asyncio.create_task(self._worker(key)) for key in self.keys]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _worker(self, key: str) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = await client.post(
                        "/v1/chat", json={"prompt": "load"}, headers={"x-api-key": key}
                    )
                except httpx.TransportError:
                    self.statuses[0] += 1  # connection-level failure
                    await asyncio.sleep(0.05)
                    continue
                self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                self.statuses[response.status_code] += 1
                if not response.headers.get("content-type", "").startswith("application/json"):
                    self.not_json += 1
                await asyncio.sleep(0.02)

    def unexpected(self) -> dict[int, int]:
        return {s: n for s, n in self.statuses.items() if s not in ALLOWED_DURING_FAULTS}


async def wait_until(check: Any, *, timeout_s: float, interval_s: float = 0.1) -> float:
    """Poll an async check until it returns True; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(interval_s)
    raise AssertionError(f"not recovered within {timeout_s} s")


async def audit(mongo_uri: str, *, settle_s: float = 10.0) -> None:
    """For every user this month: used tokens equal the tokens of their request logs, no
    reservation is left open, and nobody is above their limit."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        db = client["infergate-usage"]
        now = datetime.now(UTC)
        period = f"{now.year:04d}-{now.month:02d}"
        month_start = datetime(now.year, now.month, 1, tzinfo=UTC)

        async def nothing_open() -> bool:
            return (
                await db["usage"].count_documents({"period": period, "reservedTokens": {"$ne": 0}})
                == 0
            )

        await wait_until(nothing_open, timeout_s=settle_s, interval_s=0.25)
        async for record in db["usage"].find({"period": period}):
            logged = 0
            async for entry in db["requestlogs"].find(
                {"userId": record["userId"], "createdAt": {"$gte": month_start}}
            ):
                logged += entry["tokensUsed"]
            assert record["usedTokens"] == logged, record["userId"]
            assert record["open"] == []
            assert record["usedTokens"] <= record["monthlyTokenLimit"]
            assert record["remainingTokens"] == record["monthlyTokenLimit"] - record["usedTokens"]
    finally:
        await client.close()
