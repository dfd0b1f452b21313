"""auth-service against a real MongoDB-protocol server."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest
from auth_calls import HEADERS
from pymongo import AsyncMongoClient


async def register(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/auth/register", json={"email": email}, headers=HEADERS)


async def test_register_returns_prefixed_key_and_stores_only_its_hash(
    client: httpx.AsyncClient, db_uri: str
) -> None:
    response = await register(client, "Alice@Example.com ")
    assert response.status_code == 201
    body = response.json()
    assert body["apiKey"].startswith("sk_")
    assert len(body["apiKey"]) >= 3 + 43
    assert body["plan"] == "FREE"
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(db_uri)
    try:
        users = await mongo.get_default_database()["users"].find().to_list()
    finally:
        await mongo.close()
    assert len(users) == 1
    assert users[0]["email"] == "alice@example.com"
    assert users[0]["keyHash"] == hashlib.sha256(body["apiKey"].encode()).hexdigest()
    assert body["apiKey"] not in repr(users)


async def test_duplicate_email_is_409_case_insensitively(client: httpx.AsyncClient) -> None:
    assert (await register(client, "bob@example.com")).status_code == 201
    again = await register(client, "  BOB@example.COM")
    assert again.status_code == 409
    assert again.json()["message"] == "User already exists"


async def test_concurrent_registrations_of_one_email_create_one_user(
    client: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(*(register(client, "race@example.com") for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [201] + [409] * 9


@pytest.mark.parametrize(
    "body",
    [{"email": "not-an-email"}, {"email": {"$ne": None}}, {}, {"email": "a@b.co", "plan": "PRO"}],
)
async def test_register_rejects_invalid_bodies_with_400(
    client: httpx.AsyncClient, body: object
) -> None:
    response = await client.post("/auth/register", json=body, headers=HEADERS)
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"


async def test_verify_resolves_the_key_to_its_user(client: httpx.AsyncClient) -> None:
    issued = (await register(client, "carol@example.com")).json()
    response = await client.post("/auth/verify", json={"apiKey": issued["apiKey"]}, headers=HEADERS)
    assert response.status_code == 200
    assert response.json() == {
        "valid": True,
        "userId": issued["userId"],
        "plan": "FREE",
        "version": 0,
    }


@pytest.mark.parametrize("api_key", ["sk_" + "x" * 43, "0" * 64, "sk_"])
async def test_verify_refuses_unknown_keys_with_401(
    client: httpx.AsyncClient, api_key: str
) -> None:
    await register(client, "dave@example.com")
    response = await client.post("/auth/verify", json={"apiKey": api_key}, headers=HEADERS)
    assert response.status_code == 401
    assert response.json()["message"] == "Invalid API key"


async def test_verify_rejects_operator_objects_with_400(client: httpx.AsyncClient) -> None:
    await register(client, "erin@example.com")
    response = await client.post("/auth/verify", json={"apiKey": {"$ne": None}}, headers=HEADERS)
    assert response.status_code == 400


@pytest.mark.parametrize("headers", [{}, {"x-internal-token": "wrong-token-wrong-token-wrong"}])
async def test_routes_refuse_calls_without_the_internal_token(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post("/auth/register", json={"email": "f@example.com"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "internal_auth_failed"


async def test_readyz_reports_the_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"mongo": "ok"}
