"""The whole local stack behind nginx, with the deterministic Ollama-protocol test server.

Two stacks per session: `stack` with generous limits for most tests, and `strict_stack` with
tiny rate limits and a short window for the limiter tests. Each test makes its own users.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from infergate_devstack.nginx import UNLIMITED_EDGE
from infergate_devstack.stack import Stack

from tests.helpers import ADMIN_TOKEN, local_stack, register

if TYPE_CHECKING:
    from tests.fake_ollama_fixtures import FakeOllamaControl, FakeOllamaProcess

pytest_plugins = ["tests.fake_ollama_fixtures"]

# Small per-chat reservations make quota tests reach the limit in a few calls.
BASE_ENV = {
    # Every test calls from 127.0.0.1: the edge's and the failed-authentication limits have
    # their own tests (test_edge_limits.py).
    **UNLIMITED_EDGE,
    "AUTH_FAILURE_RATE_LIMIT": "100000",
    "MAX_OUTPUT_TOKENS": "100",
    "PROMPT_TOKEN_OVERHEAD": "16",
    "FREE_MONTHLY_TOKENS": "1000",
    "LOG_LEVEL": "info",
    "OLLAMA_TIMEOUT": "2",
    "ADMIN_TOKEN": ADMIN_TOKEN,
    # The response cache on (deterministic requests only, per user): test_response_cache.py.
    "CACHE_TTL_SECONDS": "300",
}


def _start(tmp: Path, fake: FakeOllamaProcess, env: dict[str, str]) -> Stack:
    return local_stack(tmp, fake.url, {**BASE_ENV, **env})


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllamaProcess
) -> Iterator[Stack]:
    env = {"FREE_RATE_LIMIT": "10000", "REGISTRATION_RATE_LIMIT": "10000"}
    with _start(tmp_path_factory.mktemp("stack"), fake_ollama, env) as running:
        yield running


@pytest.fixture(scope="session")
def strict_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllamaProcess
) -> Iterator[Stack]:
    env = {
        "FREE_RATE_LIMIT": "3",
        "RATE_LIMIT_WINDOW": "2",
        "REGISTRATION_RATE_LIMIT": "5",
        "REGISTRATION_RATE_WINDOW": "3600",
    }
    with _start(tmp_path_factory.mktemp("strict"), fake_ollama, env) as running:
        yield running


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the public API, through nginx."""
    async with httpx.AsyncClient(base_url=stack.public_url, timeout=30.0) as client:
        yield client


@pytest.fixture
async def api_key(api: httpx.AsyncClient) -> str:
    return await register(api)


@pytest.fixture
async def llm(fake_ollama_control: FakeOllamaControl) -> FakeOllamaControl:
    await fake_ollama_control.configure(prompt_tokens=7, completion_tokens=5)
    return fake_ollama_control
