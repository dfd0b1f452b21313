"""Calls of the public API the way a user makes them (through nginx)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

# The stacks' ADMIN_TOKEN (the admin API is called on a gateway directly, never through nginx).
ADMIN_TOKEN = "integration-admin-token-0123456789"


async def register(client: httpx.AsyncClient) -> str:
    """A fresh user's API key."""
    response = await client.post(
        "/v1/register", json={"email": f"user-{uuid.uuid4().hex}@example.com"}
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["apiKey"]
    return key


async def chat(client: httpx.AsyncClient, key: str, prompt: Any = "Hello there") -> httpx.Response:
    return await client.post("/v1/chat", json={"prompt": prompt}, headers={"x-api-key": key})


async def usage(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    response = await client.get("/v1/usage", headers={"x-api-key": key})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
