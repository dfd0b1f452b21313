"""ai-service's unit tests: the repository root on the import path, for the shared test LLM,
and this directory, for the reply bodies the tests share (`ollama_replies`); the routing tests'
three test servers (`servers`, started once per module, and `fleet`, reset for each test).

`tests/fake_ollama_fixtures.py` (the deterministic Ollama-protocol server) lives with the
integration tests; this makes `tests.fake_ollama_fixtures` importable when this directory runs
on its own, as it is when pytest has loaded `tests/conftest.py`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

REPO_ROOT = str(Path(__file__).resolve().parents[2])
if REPO_ROOT not in sys.path:
    sys.path.append(REPO_ROOT)
sys.path.insert(0, str(Path(__file__).parent))

if TYPE_CHECKING:
    from tests.backend_fleet import Fleet


@pytest.fixture(scope="module")
async def servers() -> AsyncIterator[Fleet]:
    from tests.backend_fleet import Fleet

    async with Fleet.running() as fleet:
        yield fleet


@pytest.fixture
async def fleet(servers: Fleet) -> Fleet:
    await servers.ready_for_test()
    return servers
