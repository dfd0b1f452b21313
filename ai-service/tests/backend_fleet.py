"""ai-service built over the three test servers of `tests/backend_fleet.py` from a routes file,
and how its routing tests call it and read its answers and metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from ai_service.config import Settings
from ai_service.main import create_app
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from tests.backend_fleet import NAMES, Entry, Fleet, concurrently, wait_until

__all__ = ["NAMES", "Entry", "Fleet", "concurrently", "wait_until"]
TOKEN = "unit-test-internal-token-0123456789"
HEADERS = {"x-internal-token": TOKEN}


def fleet_settings(routes_file: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "internal_token": SecretStr(TOKEN),
        "routes_file": routes_file,
        "ollama_timeout": 10.0,
        "backend_probe_interval_seconds": 0.1,
        "backend_cooldown_seconds": 60.0,
        **extra,
    }
    return Settings(**values)


@asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """ai-service with its lifespan run (prober included), called in-process."""
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://ai.test",
            timeout=30.0,
        ) as client,
    ):
        yield client


async def generate(
    client: httpx.AsyncClient, *, model: str | None = None, text: str = "hello"
) -> httpx.Response:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}], "maxTokens": 5}
    if model is not None:
        body["model"] = model
    return await client.post("/ai/generate", json=body, headers=HEADERS)


async def stream_events(client: httpx.AsyncClient, *, model: str | None = None) -> list[Any]:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "hello"}],
        "maxTokens": 5,
        "stream": True,
    }
    if model is not None:
        body["model"] = model
    async with client.stream("POST", "/ai/generate", json=body, headers=HEADERS) as response:
        assert response.status_code == 200, await response.aread()
        return [json.loads(line) async for line in response.aiter_lines() if line]


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample of the Prometheus text `text`, by name and exact labels."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return None


def counts(responses: Sequence[httpx.Response]) -> dict[str, int]:
    """How many answers each backend gave (the `backend` field of each answer)."""
    found = {name: 0 for name in NAMES}
    for response in responses:
        found[response.json()["backend"]] += 1
    return found
