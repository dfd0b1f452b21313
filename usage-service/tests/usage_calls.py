"""Calls of usage-service's internal API as the gateway makes them (shared by the test modules)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from usage_service.config import Settings

TOKEN = "unit-test-internal-token-0123456789"
HEADERS = {"x-internal-token": TOKEN}


def settings_for(db_uri: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "internal_token": SecretStr(TOKEN),
        "mongo_uri": db_uri,
        "free_monthly_tokens": 1000,
        "pro_monthly_tokens": 20000,
        "log_format": "json",
        **overrides,
    }
    return Settings(**values)


def new_user() -> str:
    return uuid.uuid4().hex[:24]


def reservation_body(
    user: str,
    tokens: int,
    *,
    minimum: int | None = None,
    plan: str = "FREE",
    rid: str | None = None,
    started_at: datetime | None = None,
    hold_seconds: int = 60,
) -> dict[str, Any]:
    """A reservation of `tokens` (at least `minimum`, by default all of them)."""
    return {
        "reservationId": rid or uuid.uuid4().hex,
        "requestId": "r-1",
        "userId": user,
        "plan": plan,
        "tokens": tokens,
        "minTokens": tokens if minimum is None else minimum,
        "holdSeconds": hold_seconds,
        "model": "m",
        "startedAt": (started_at or datetime.now(UTC)).isoformat(),
    }


async def reserve(
    client: httpx.AsyncClient, user: str, tokens: int, **options: Any
) -> httpx.Response:
    body = reservation_body(user, tokens, **options)
    return await client.post("/usage/reserve", json=body, headers=HEADERS)


def settlement_body(
    user: str,
    reservation: dict[str, Any],
    prompt: int,
    completion: int,
    *,
    status: str = "SUCCESS",
    plan: str = "FREE",
    started_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "reservationId": reservation["reservationId"],
        "requestId": "r-1",
        "userId": user,
        "plan": plan,
        "reservedTokens": reservation["reservedTokens"],
        "promptTokens": prompt,
        "completionTokens": completion,
        "status": status,
        "model": "m",
        "responseTimeMs": 12.5,
        "startedAt": (started_at or datetime.now(UTC)).isoformat(),
    }


async def settle(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/usage/settle", json=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def usage_of(client: httpx.AsyncClient, user: str) -> dict[str, Any]:
    response = await client.get(f"/usage/{user}", headers=HEADERS)
    assert response.status_code == 200
    return dict(response.json())


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from a Prometheus text page (None when absent)."""
    for family in text_string_to_metric_families(text):
        for each in family.samples:
            if each.name == name and all(each.labels.get(k) == v for k, v in labels.items()):
                return float(each.value)
    return None
