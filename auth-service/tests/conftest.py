"""Shared fixtures of auth-service's unit tests: a fresh database per test, the app on it."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
import pytest
from auth_service.main import create_app
from fastapi import FastAPI
from infergate_devstack.components.datastores import mongo_uri

# The helper module sits beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def db_uri(mongo_port: int) -> str:
    return mongo_uri(mongo_port, f"auth-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def client(app_client: AppClient, db_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    from auth_calls import settings_for

    async with app_client(create_app(settings_for(db_uri))) as c:
        yield c
