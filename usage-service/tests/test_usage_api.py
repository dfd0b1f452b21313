"""usage-service against a real MongoDB-protocol server: reservations, settling, quotas."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from infergate_devstack.components.datastores import mongo_uri
from pydantic import SecretStr
from pymongo import AsyncMongoClient
from usage_service.config import Settings
from usage_service.main import create_app
from usage_service.periods import current_period

TOKEN = "unit-test-internal-token-0123456789"
HEADERS = {"x-internal-token": TOKEN}
AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def db_uri(mongo_port: int) -> str:
    return mongo_uri(mongo_port, f"usage-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def db(db_uri: str) -> AsyncIterator[Any]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(db_uri, tz_aware=True)
    yield mongo.get_default_database()
    await mongo.close()


def settings_for(db_uri: str, **overrides: Any) -> Settings:
    return Settings(
        internal_token=SecretStr(TOKEN),
        mongo_uri=db_uri,
        free_monthly_tokens=1000,
        log_format="json",
        **overrides,
    )


@pytest.fixture
async def client(app_client: AppClient, db_uri: str) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(settings_for(db_uri))) as c:
        yield c


def new_user() -> str:
    return uuid.uuid4().hex[:24]


async def reserve(client: httpx.AsyncClient, user: str, tokens: int) -> httpx.Response:
    body = {"requestId": "r-1", "userId": user, "plan": "FREE", "tokens": tokens, "model": "m"}
    return await client.post("/usage/reserve", json=body, headers=HEADERS)


def settle_body(
    user: str, reservation: dict[str, Any], prompt: int, completion: int
) -> dict[str, Any]:
    return {
        "reservationId": reservation["reservationId"],
        "requestId": "r-1",
        "userId": user,
        "period": reservation["period"],
        "reservedTokens": reservation["reservedTokens"],
        "promptTokens": prompt,
        "completionTokens": completion,
        "status": "SUCCESS",
        "model": "m",
        "responseTimeMs": 12.5,
    }


async def usage_of(client: httpx.AsyncClient, user: str) -> dict[str, Any]:
    response = await client.get(f"/usage/{user}", headers=HEADERS)
    assert response.status_code == 200
    return dict(response.json())


async def test_a_new_user_has_the_full_monthly_quota(client: httpx.AsyncClient) -> None:
    usage = await usage_of(client, new_user())
    assert usage["usedTokens"] == 0
    assert usage["monthlyTokenLimit"] == 1000
    assert usage["period"] == current_period()


async def test_settle_charges_the_actual_tokens_and_frees_the_rest(
    client: httpx.AsyncClient, db: Any
) -> None:
    user = new_user()
    reservation = (await reserve(client, user, 300)).json()
    assert (await usage_of(client, user))["reservedTokens"] == 300
    response = await client.post(
        "/usage/settle", json=settle_body(user, reservation, 20, 30), headers=HEADERS
    )
    assert response.status_code == 200
    usage = await usage_of(client, user)
    assert (usage["usedTokens"], usage["reservedTokens"], usage["remainingTokens"]) == (50, 0, 950)
    logs = await db["requestlogs"].find({"userId": user}).to_list()
    assert [(log["status"], log["tokensUsed"]) for log in logs] == [("SUCCESS", 50)]
    assert "prompt" not in logs[0]


async def test_settling_twice_charges_and_logs_once(client: httpx.AsyncClient, db: Any) -> None:
    user = new_user()
    reservation = (await reserve(client, user, 100)).json()
    body = settle_body(user, reservation, 10, 10)
    results = await asyncio.gather(
        *(client.post("/usage/settle", json=body, headers=HEADERS) for _ in range(5))
    )
    assert {r.status_code for r in results} == {200}
    assert (await usage_of(client, user))["usedTokens"] == 20
    assert await db["requestlogs"].count_documents({"userId": user}) == 1


async def test_reserve_refuses_with_403_when_the_quota_cannot_cover_it(
    client: httpx.AsyncClient, db: Any
) -> None:
    user = new_user()
    assert (await reserve(client, user, 900)).status_code == 201
    refused = await reserve(client, user, 101)
    assert refused.status_code == 403
    assert refused.json()["message"] == "Token quota exceeded"
    logs = await db["requestlogs"].find({"userId": user}).to_list()
    assert [log["status"] for log in logs] == ["QUOTA_EXCEEDED"]


async def test_concurrent_reservations_never_overshoot_the_limit(client: httpx.AsyncClient) -> None:
    user = new_user()
    results = await asyncio.gather(*(reserve(client, user, 70) for _ in range(50)))
    granted = [r for r in results if r.status_code == 201]
    assert len(granted) == 1000 // 70
    assert {r.status_code for r in results} == {201, 403}
    usage = await usage_of(client, user)
    assert usage["reservedTokens"] == 70 * len(granted)
    assert usage["remainingTokens"] == 1000 - 70 * len(granted)


async def test_last_months_usage_does_not_count_this_month(
    client: httpx.AsyncClient, db: Any
) -> None:
    user = new_user()
    await db["usage"].insert_one(
        {
            "_id": f"{user}:2000-01",
            "userId": user,
            "period": "2000-01",
            "monthlyTokenLimit": 1000,
            "usedTokens": 1000,
            "reservedTokens": 0,
            "remainingTokens": 0,
            "open": [],
        }
    )
    assert (await reserve(client, user, 500)).status_code == 201
    assert (await usage_of(client, user))["usedTokens"] == 0


async def test_expired_reservations_are_released_by_the_sweeper(
    app_client: AppClient, db_uri: str, db: Any
) -> None:
    settings = settings_for(db_uri, reservation_ttl_seconds=1, reservation_sweep_seconds=0.2)
    async with app_client(create_app(settings)) as client:
        user = new_user()
        assert (await reserve(client, user, 400)).status_code == 201
        for _ in range(50):
            if (await usage_of(client, user))["reservedTokens"] == 0:
                break
            await asyncio.sleep(0.1)
        usage = await usage_of(client, user)
    assert (usage["reservedTokens"], usage["usedTokens"], usage["remainingTokens"]) == (0, 0, 1000)
    logs = await db["requestlogs"].find({"userId": user}).to_list()
    assert [log["status"] for log in logs] == ["EXPIRED"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/usage/reserve",
            {"requestId": "r", "userId": "a" * 24, "plan": "FREE", "tokens": -5, "model": "m"},
        ),
        (
            "/usage/reserve",
            {"requestId": "r", "userId": "a" * 24, "plan": "FREE", "tokens": 0, "model": "m"},
        ),
        (
            "/usage/reserve",
            {"requestId": "r", "userId": {"$ne": None}, "plan": "FREE", "tokens": 5, "model": "m"},
        ),
        (
            "/usage/reserve",
            {"requestId": "r", "userId": "a" * 24, "plan": "GOLD", "tokens": 5, "model": "m"},
        ),
        (
            "/usage/reserve",
            {"requestId": "r", "userId": "a" * 24, "plan": "FREE", "tokens": 1.5, "model": "m"},
        ),
        ("/usage/settle", {"reservationId": {"$gt": ""}}),
    ],
)
async def test_invalid_bodies_are_400(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    response = await client.post(path, json=body, headers=HEADERS)
    assert response.status_code == 400


async def test_routes_refuse_calls_without_the_internal_token(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/usage/{new_user()}")
    assert response.status_code == 401
