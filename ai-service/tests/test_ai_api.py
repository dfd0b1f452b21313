"""ai-service's HTTP boundary: internal token and body validation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from ai_service.config import Settings
from ai_service.main import create_app
from fastapi import FastAPI
from pydantic import SecretStr

TOKEN = "unit-test-internal-token-0123456789"
BODY = {"messages": [{"role": "user", "content": "x"}], "maxTokens": 5}
AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
async def client(app_client: AppClient) -> AsyncIterator[httpx.AsyncClient]:
    # Nothing listens on port 9: an unreachable LLM.
    settings = Settings(internal_token=SecretStr(TOKEN), ollama_url="http://127.0.0.1:9")
    async with app_client(create_app(settings)) as c:
        yield c


async def test_generate_refuses_calls_without_the_internal_token(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/ai/generate", json=BODY)
    assert response.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [], "maxTokens": 5},
        {**BODY, "maxTokens": 0},
        {"messages": [{"role": "root", "content": "x"}], "maxTokens": 5},
        {"messages": {"$ne": 1}, "maxTokens": 5},
        {},
    ],
)
async def test_generate_rejects_invalid_bodies(client: httpx.AsyncClient, body: object) -> None:
    response = await client.post("/ai/generate", json=body, headers={"x-internal-token": TOKEN})
    assert response.status_code == 400


async def test_unreachable_llm_is_503_and_not_ready(client: httpx.AsyncClient) -> None:
    response = await client.post("/ai/generate", json=BODY, headers={"x-internal-token": TOKEN})
    assert response.status_code == 503
    assert response.json()["code"] == "llm_unavailable"
    assert (await client.get("/readyz")).status_code == 503
