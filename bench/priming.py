"""Priming: exactly one request per user on each gateway replica before anything is measured.

Sent from Python rather than wrk: a wrk run restarts its rotation over the keys at the same
places every time (and asks load.lua for one request before it starts, which skips the first
key), so a few short wrk runs on a slow machine left about half the users unprimed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx

from bench.stack import BenchStack, progress
from bench.wrk import Target

PRIMING_CONCURRENCY = 32
# A keep-alive connection the server closes as the client reuses it fails the request (httpx does
# not retry a POST): asked again, up to this many times in all.
PRIMING_ATTEMPTS = 3
TRANSPORT_ERROR = 0  # its key in the statuses counted


def _headers(target: Target, key: str) -> dict[str, str]:
    value = f"Bearer {key}" if target.key_header == "authorization" else key
    return {target.key_header: value, "content-type": "application/json"}


async def _prime_all(urls: list[str], target: Target, keys: list[str]) -> Counter[int]:
    body = target.body_file.read_bytes() if target.body_file else b""
    gate = asyncio.Semaphore(PRIMING_CONCURRENCY)
    limits = httpx.Limits(max_connections=PRIMING_CONCURRENCY)
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:

        async def one(url: str, key: str) -> None:
            for _ in range(PRIMING_ATTEMPTS):
                try:
                    async with gate:
                        response = await client.request(
                            target.method, url, content=body, headers=_headers(target, key)
                        )
                except httpx.TransportError:
                    statuses[TRANSPORT_ERROR] += 1
                    continue
                statuses[response.status_code] += 1
                return

        # One replica after the other: each user's first request (on the first) comes before
        # its second (with the cache-hit body, the second replica's is then already a hit).
        for url in urls:
            await asyncio.gather(*(one(url, key) for key in keys))
    return statuses


def prime(bench: BenchStack, target: Target) -> None:
    """One request per user (every key of `target`) on each gateway replica, called directly,
    not through nginx, so every point sees the steady state of active users: each key verified
    and cached by each replica, each month's quota figures known (a first request per user and
    replica costs an auth-service call and a MongoDB read more; see bench/README.md). With the
    cache-hit body, this also leaves every user's answer in the response cache."""
    if target.keys_file is None:
        raise ValueError(f"{target.name}: priming needs the users' keys")
    keys = target.keys_file.read_text().split()
    path = urlsplit(target.url).path
    urls = [f"http://127.0.0.1:{port}{path}" for port in bench.stack.gateway_ports]
    started = time.monotonic()
    statuses = asyncio.run(_prime_all(urls, target, keys))
    progress(
        f"primed: {sum(statuses.values())} {target.name} requests for {len(keys)} users"
        f" in {time.monotonic() - started:.0f} s, statuses {dict(statuses)} (0: connection"
        " failed, asked again)"
    )
