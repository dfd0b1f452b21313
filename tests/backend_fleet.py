"""Three deterministic Ollama-protocol servers (`tests/fake_ollama.py`, each its own process) as
the model backends of routing tests (ai-service's own and the whole stack's), with their control
API, a routes file naming them, and the waiting and load helpers those tests share."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.fake_ollama_fixtures import FakeOllamaControl, FakeOllamaProcess

NAMES = ("a", "b", "c")
Entry = Mapping[str, Any]  # one backend of a route: name (of the fleet), weight, priority, ...
T = TypeVar("T")


class Fleet:
    """The three servers, by name; each test starts from running servers in their default
    configuration with zeroed counters (`ready_for_test`)."""

    def __init__(self) -> None:
        self.servers = {name: FakeOllamaProcess() for name in NAMES}
        self._http = httpx.AsyncClient(timeout=10.0)

    def url(self, name: str) -> str:
        return self.servers[name].url

    def control(self, name: str) -> FakeOllamaControl:
        return FakeOllamaControl(self.url(name), self._http)

    def stop(self, name: str) -> None:
        self.servers[name].stop()

    def start(self, name: str) -> None:
        if self.servers[name].process is None:
            self.servers[name].start()

    async def ready_for_test(self) -> None:
        for name in NAMES:
            self.start(name)
            await self.control(name).reset()

    async def chat_calls(self) -> dict[str, int]:
        return {name: (await self.control(name).stats())["chat_calls"] for name in NAMES}

    @classmethod
    @asynccontextmanager
    async def running(cls) -> AsyncIterator[Fleet]:
        """For a module fixture: the servers started once, stopped at the end."""
        fleet = cls()
        try:
            for name in NAMES:
                fleet.start(name)
            yield fleet
        finally:
            await fleet._http.aclose()
            for server in fleet.servers.values():
                server.stop()

    def routes_file(
        self,
        directory: Path,
        models: Mapping[str, Sequence[Entry]],
        default: Sequence[Entry] = (),
    ) -> Path:
        """A ROUTES_FILE whose entries name fleet servers (`name`) instead of URLs."""
        lines: list[str] = []
        tables = [(f"models.{json.dumps(model)}", entries) for model, entries in models.items()]
        for table, entries in [*tables, ("default", default)]:
            for entry in entries:
                lines.append(f"[[{table}]]")
                lines.append(f'url = "{self.url(entry["name"])}"')
                lines.extend(f"{key} = {json.dumps(value)}" for key, value in entry.items())
        path = directory / "routes.toml"
        path.write_text("\n".join(lines) + "\n")
        return path


async def concurrently(count: int, call: Callable[[int], Awaitable[T]], *, width: int) -> list[T]:
    """`count` calls, at most `width` at a time."""
    gate = asyncio.Semaphore(width)

    async def one(index: int) -> T:
        async with gate:
            return await call(index)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, timeout_s: float = 15.0, what: str
) -> None:
    """Poll `condition` until it holds, or fail after `timeout_s` (never a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
