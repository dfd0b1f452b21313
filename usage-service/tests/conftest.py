"""Shared fixtures of usage-service's unit tests: a fresh database per test, the app on it."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from infergate_devstack.components.datastores import mongo_uri
from pymongo import AsyncMongoClient
from usage_service.main import create_app

# The helper module sits beside the tests; the repository root makes the integration tests'
# shared helpers importable (`tests.webhook_receiver`) when this directory runs on its own.
sys.path.insert(0, str(Path(__file__).parent))
REPO_ROOT = str(Path(__file__).resolve().parents[2])
if REPO_ROOT not in sys.path:
    sys.path.append(REPO_ROOT)

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def db_uri(mongo_port: int) -> str:
    return mongo_uri(mongo_port, f"usage-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def db(db_uri: str) -> AsyncIterator[Any]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(db_uri, tz_aware=True)
    yield mongo.get_default_database()
    await mongo.close()


@pytest.fixture
async def client(app_client: AppClient, db_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    from usage_calls import settings_for

    async with app_client(create_app(settings_for(db_uri))) as c:
        yield c
