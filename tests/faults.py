"""Tools of the fault tests: a steady background load of chats that counts what its clients
received, and the ledger audit that compares the ledger with those counts.

The audit never compares two of InferGate's own records: the expected charge of each user is what
the test's own clients were told (`tokensUsed` of every 200 answer and of every streamed `done`
or `error` event), plus, for requests whose outcome the client never learned (the connection
broke), anything between nothing and the request's upper bound.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.asyncio as redis
from api_gateway.settlement_outbox import OutboxKeys
from pymongo import AsyncMongoClient

# What a user may see while something is down: never a 500, never an HTML page.
ALLOWED_DURING_FAULTS = {200, 503, 504}
# nginx's answer when its gateway went away mid-request (the gateway itself never answers 502):
# the chat's outcome is unknown to the client.
NGINX_LOST_UPSTREAM = 502
LOAD_PROMPT = "load"


@dataclass
class Owed:
    """What one user was told they were charged, and what may have been charged unseen."""

    exact: int = 0
    uncertain: int = 0  # upper bounds of requests whose outcome the client never learned


@dataclass
class Ledger:
    """The expected charges of the test's users, by API key."""

    upper_bound: int  # of one load chat: the prompt's bytes + overhead + output cap
    owed: dict[str, Owed] = field(default_factory=dict)

    def told(self, key: str, tokens: int) -> None:
        self.owed.setdefault(key, Owed()).exact += tokens

    def unknown(self, key: str, bound: int | None = None) -> None:
        self.owed.setdefault(key, Owed()).uncertain += bound or self.upper_bound


@dataclass
class StreamRead:
    status: int
    deltas: int = 0
    ending: dict[str, Any] | None = None  # the `done` or `error` event
    cut: bool = False  # the connection broke before the end
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytes = b""


async def read_stream(
    client: httpx.AsyncClient,
    key: str,
    prompt: str,
    *,
    on_delta: Callable[[int], None] | None = None,
) -> StreamRead:
    """A streamed chat as a client sees it (never raises for a broken connection)."""
    read = StreamRead(status=0)
    try:
        async with client.stream(
            "POST", "/v1/chat", json={"prompt": prompt, "stream": True}, headers={"x-api-key": key}
        ) as response:
            read.status, read.headers = response.status_code, response.headers
            if response.status_code != 200:
                read.body = await response.aread()
                return read
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line.removeprefix("data: "))
                if event["type"] == "delta":
                    read.deltas += 1
                    if on_delta is not None:
                        on_delta(read.deltas)
                else:
                    read.ending = event
    except httpx.TransportError:
        read.cut = True
    if read.status == 200 and read.ending is None:
        read.cut = True
    return read


@dataclass
class Load:
    """Chats sent back to back by one worker per key until stopped, half of them streamed;
    every answer is recorded, and every charge the clients were told of."""

    base_url: str
    keys: list[str]
    ledger: Ledger
    statuses: Counter[int] = field(default_factory=Counter)
    not_json: int = 0
    slowest_s: float = 0.0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Load:
        self._tasks = [
            asyncio.create_task(self._worker(key, streamed=i % 2 == 1))
            for i, key in enumerate(self.keys)
        ]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _worker(self, key: str, *, streamed: bool) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60.0) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                if streamed:
                    await self._stream(client, key)
                else:
                    await self._plain(client, key)
                self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                await asyncio.sleep(0.02)

    async def _plain(self, client: httpx.AsyncClient, key: str) -> None:
        try:
            response = await client.post(
                "/v1/chat", json={"prompt": LOAD_PROMPT}, headers={"x-api-key": key}
            )
        except httpx.TransportError:
            self.statuses[0] += 1  # connection-level failure: the outcome is unknown
            self.ledger.unknown(key)
            await asyncio.sleep(0.05)
            return
        self.statuses[response.status_code] += 1
        if not response.headers.get("content-type", "").startswith("application/json"):
            self.not_json += 1
        elif response.status_code == 200:
            self.ledger.told(key, response.json()["tokensUsed"])
        elif response.status_code == NGINX_LOST_UPSTREAM:
            self.ledger.unknown(key)

    async def _stream(self, client: httpx.AsyncClient, key: str) -> None:
        read = await read_stream(client, key, LOAD_PROMPT)
        self.statuses[read.status] += 1
        if read.status != 200:
            if not read.headers.get("content-type", "").startswith("application/json"):
                self.not_json += 1
            if read.status in (0, NGINX_LOST_UPSTREAM):
                self.ledger.unknown(key)
            return
        if read.ending is not None:
            self.ledger.told(key, read.ending["tokensUsed"])
        if read.cut:
            self.ledger.unknown(key)

    def unexpected(self) -> dict[int, int]:
        return {s: n for s, n in self.statuses.items() if s not in ALLOWED_DURING_FAULTS}


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float, interval_s: float = 0.1
) -> float:
    """Poll an async check until it returns True; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(interval_s)
    raise AssertionError(f"not recovered within {timeout_s} s")


async def user_ids(base_url: str, keys: list[str]) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as client:
        ids = {}
        for key in keys:
            response = await client.get("/test", headers={"x-api-key": key})
            assert response.status_code == 200, response.text
            ids[key] = response.json()["user"]["userId"]
        return ids


async def audit(
    *, base_url: str, mongo_uri: str, redis_url: str, ledger: Ledger, settle_s: float = 60.0
) -> None:
    """Once every settlement is applied and no reservation is open, each user's charge in the
    ledger is what their clients were told, plus at most the bounds of unknown outcomes."""
    ids = await user_ids(base_url, list(ledger.owed))
    outbox = redis.Redis.from_url(redis_url)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    usage = client["infergate-usage"]["usage"]
    try:

        async def settled() -> bool:
            if await outbox.hlen(OutboxKeys().records):
                return False
            query = {"userId": {"$in": list(ids.values())}, "reservedTokens": {"$ne": 0}}
            return await usage.count_documents(query) == 0

        await wait_until(settled, timeout_s=settle_s, interval_s=0.25)
        for key, owed in ledger.owed.items():
            charged = 0
            async for record in usage.find({"userId": ids[key]}):
                assert record["open"] == []
                assert (
                    record["remainingTokens"] == record["monthlyTokenLimit"] - record["usedTokens"]
                )
                charged += record["usedTokens"]
            assert owed.exact <= charged <= owed.exact + owed.uncertain, (key, owed, charged)
    finally:
        await client.close()
        await outbox.aclose()
