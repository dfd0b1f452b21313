"""Shared fixtures of the gateway's unit tests: the stand-in services and a fresh Redis."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as redis

if TYPE_CHECKING:
    from gateway_downstream import Downstream

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
