"""CPU per `ollama.AsyncClient.chat` call: the stock httpx transport against the aiohttp one.

    uv run --frozen python -m bench.ollama_client_cost [--calls 3000] [--concurrency 32]

The deterministic Ollama-protocol test server runs in its own process on a free loopback port, so
`time.process_time()` here counts only the client: ollama's client, httpx, and the wire under it.
Each client makes `--calls` calls one after another, then `--calls` calls `--concurrency` at a
time, whole answers (`stream=False`) and streamed ones, on uvloop as ai-service runs.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import ollama
import uvloop
from ai_service.llm import create_ollama_client

from tests.fake_ollama_fixtures import FakeOllamaProcess

MESSAGES = [{"role": "user", "content": "How much CPU does one call cost?"}]
WARMUP_CALLS = 200


def stock_client(url: str) -> ollama.AsyncClient:
    """The client ai-service created before the aiohttp transport (httpx + httpcore's pool)."""
    return ollama.AsyncClient(host=url, timeout=httpx.Timeout(120.0, connect=3.0))


def aiohttp_client(url: str) -> ollama.AsyncClient:
    """The client ai-service creates now."""
    return create_ollama_client(url=url, timeout=120.0)


CLIENTS: dict[str, Callable[[str], ollama.AsyncClient]] = {
    "httpx (stock)": stock_client,
    "aiohttp transport": aiohttp_client,
}


@dataclass(frozen=True)
class Point:
    client: str
    stream: bool
    concurrency: int
    cpu_ms_per_call: float
    calls_per_s: float


async def one_chat(client: ollama.AsyncClient, *, stream: bool) -> None:
    if stream:
        parts = await client.chat(model="llama3", messages=MESSAGES, stream=True)
        async for part in parts:
            if part.done:
                return
        raise RuntimeError("the stream ended without a final part")
    response = await client.chat(model="llama3", messages=MESSAGES, stream=False)
    if not response.done:
        raise RuntimeError("the answer was not final")


async def run_calls(
    client: ollama.AsyncClient, *, calls: int, concurrency: int, stream: bool
) -> None:
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one_chat(client, stream=stream)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


async def measure(name: str, url: str, *, calls: int, concurrency: int, stream: bool) -> Point:
    async with CLIENTS[name](url) as client:
        await run_calls(client, calls=WARMUP_CALLS, concurrency=concurrency, stream=stream)
        cpu, wall = time.process_time(), time.perf_counter()
        await run_calls(client, calls=calls, concurrency=concurrency, stream=stream)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Point(name, stream, concurrency, cpu * 1000 / calls, calls / wall)


async def run(url: str, *, calls: int, concurrency: int) -> list[Point]:
    points = []
    for stream in (False, True):
        for level in (1, concurrency):
            for name in CLIENTS:
                point = await measure(name, url, calls=calls, concurrency=level, stream=stream)
                print(
                    f"{'stream' if stream else 'whole':6} c={level:<3} {name:18}"
                    f" {point.cpu_ms_per_call:6.3f} CPU ms/call {point.calls_per_s:7.0f} calls/s",
                    flush=True,
                )
                points.append(point)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with FakeOllamaProcess() as server:
        uvloop.run(run(server.url, calls=args.calls, concurrency=args.concurrency))


if __name__ == "__main__":
    main()
