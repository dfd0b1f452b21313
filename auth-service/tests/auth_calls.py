"""Calls of auth-service's internal API as the gateway makes them (shared by the test modules)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from auth_service.config import Settings
from pydantic import SecretStr

TOKEN = "unit-test-internal-token-0123456789"
HEADERS = {"x-internal-token": TOKEN}


def settings_for(db_uri: str) -> Settings:
    return Settings(
        internal_token=SecretStr(TOKEN),
        key_derivation_secret=SecretStr("unit-test-key-derivation-secret-0123456789"),
        mongo_uri=db_uri,
        log_format="json",
    )


def new_email() -> str:
    return f"u-{uuid.uuid4().hex[:10]}@example.com"


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(path, json=body, headers=HEADERS)
