"""Shared fixtures of the gateway's unit tests: the stand-in services and a fresh Redis."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis.asyncio as redis
from api_gateway.main import create_app
from fastapi import FastAPI

if TYPE_CHECKING:
    from gateway_downstream import Downstream
    from recorded_metrics import Recorded

# The stand-ins module sits beside the tests.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def downstream() -> Downstream:
    from gateway_downstream import Downstream

    return Downstream()


@pytest.fixture
async def redis_client(redis_port: int) -> AsyncIterator[redis.Redis]:
    """A client of the test Redis, emptied first so windows start fresh."""
    client = redis.Redis(port=redis_port)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def recorded() -> Recorded:
    from recorded_metrics import Recorded

    return Recorded()


AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]
Opener = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def open_gateway(
    app_client: AppClient, downstream: Downstream, redis_port: int, redis_client: redis.Redis
) -> Opener:
    """Open a gateway on the stand-ins with `settings_for` plus overrides (a `redis_port`
    override points it at another Redis)."""
    from gateway_downstream import settings_for

    def open_app(**overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        port = overrides.pop("redis_port", redis_port)
        app = create_app(settings_for(port, **overrides), transport=downstream.transport())
        return app_client(app)

    return open_app
