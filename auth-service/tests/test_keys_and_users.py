"""auth-service key rotation and revocation, and the user routes of the admin API (real Mongo)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

import httpx
import pytest
from auth_calls import HEADERS
from pymongo import AsyncMongoClient


async def stored_users(db_uri: str) -> list[dict[str, Any]]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(db_uri)
    try:
        return await mongo.get_default_database()["users"].find().to_list()
    finally:
        await mongo.close()


async def register(client: httpx.AsyncClient, email: str | None = None) -> dict[str, Any]:
    email = email or f"u-{uuid.uuid4().hex[:10]}@example.com"
    response = await client.post("/auth/register", json={"email": email}, headers=HEADERS)
    assert response.status_code == 201
    return dict(response.json())


async def post(client: httpx.AsyncClient, path: str, api_key: object) -> httpx.Response:
    return await client.post(path, json={"apiKey": api_key}, headers=HEADERS)


async def verify(client: httpx.AsyncClient, api_key: str) -> int:
    return (await post(client, "/auth/verify", api_key)).status_code


async def test_rotate_issues_a_new_key_and_the_old_one_stops_verifying(
    client: httpx.AsyncClient, db_uri: str
) -> None:
    user = await register(client)
    response = await post(client, "/auth/keys/rotate", user["apiKey"])
    assert response.status_code == 200
    rotated = response.json()
    assert rotated["message"] == "API key rotated"
    assert (rotated["userId"], rotated["plan"], rotated["version"]) == (user["userId"], "FREE", 1)
    assert rotated["apiKey"].startswith("sk_")
    assert rotated["apiKey"] != user["apiKey"]
    assert await verify(client, user["apiKey"]) == 401
    assert await verify(client, rotated["apiKey"]) == 200
    verified = await post(client, "/auth/verify", rotated["apiKey"])
    assert verified.json()["version"] == 1
    [stored] = await stored_users(db_uri)
    assert stored["keyHash"] == hashlib.sha256(rotated["apiKey"].encode()).hexdigest()
    assert stored["keyPrefix"] == rotated["apiKey"][:10]
    assert rotated["apiKey"] not in repr(stored)


async def test_concurrent_rotations_of_one_key_succeed_once(client: httpx.AsyncClient) -> None:
    user = await register(client)
    results = await asyncio.gather(
        *(post(client, "/auth/keys/rotate", user["apiKey"]) for _ in range(8))
    )
    assert sorted(r.status_code for r in results) == [200] + [401] * 7
    [winner] = [r.json()["apiKey"] for r in results if r.status_code == 200]
    assert await verify(client, winner) == 200


async def test_revoke_leaves_the_user_without_a_working_key(
    client: httpx.AsyncClient, db_uri: str
) -> None:
    user = await register(client)
    response = await post(client, "/auth/keys/revoke", user["apiKey"])
    assert response.status_code == 200
    assert response.json() == {
        "message": "API key revoked",
        "userId": user["userId"],
        "version": 1,
    }
    assert await verify(client, user["apiKey"]) == 401
    assert (await post(client, "/auth/keys/revoke", user["apiKey"])).status_code == 401
    assert (await post(client, "/auth/keys/rotate", user["apiKey"])).status_code == 401
    [stored] = await stored_users(db_uri)
    assert stored["keyHash"].startswith("revoked:")
    assert stored["keyPrefix"] is None


async def test_many_revoked_users_coexist_under_the_unique_key_index(
    client: httpx.AsyncClient, db_uri: str
) -> None:
    users = [await register(client) for _ in range(3)]
    for user in users:
        assert (await post(client, "/auth/keys/revoke", user["apiKey"])).status_code == 200
    stored = await stored_users(db_uri)
    assert len({s["keyHash"] for s in stored}) == 3
    # A user registered afterwards is unaffected.
    fresh = await register(client)
    assert await verify(client, fresh["apiKey"]) == 200


@pytest.mark.parametrize("path", ["/auth/keys/rotate", "/auth/keys/revoke"])
@pytest.mark.parametrize("api_key", ["sk_" + "x" * 43, "revoked:" + "0" * 64, "0" * 64])
async def test_key_routes_refuse_unknown_keys_with_401(
    client: httpx.AsyncClient, path: str, api_key: str
) -> None:
    await register(client)
    response = await post(client, path, api_key)
    assert response.status_code == 401
    assert response.json()["message"] == "Invalid API key"


@pytest.mark.parametrize("api_key", [{"$ne": None}, "", None])
async def test_key_routes_reject_malformed_keys_with_400(
    client: httpx.AsyncClient, api_key: object
) -> None:
    assert (await post(client, "/auth/keys/revoke", api_key)).status_code == 400


async def test_a_revoked_key_hash_cannot_be_used_to_find_the_user(
    client: httpx.AsyncClient, db_uri: str
) -> None:
    user = await register(client)
    await post(client, "/auth/keys/revoke", user["apiKey"])
    [stored] = await stored_users(db_uri)
    assert await verify(client, stored["keyHash"]) == 401


async def test_users_are_found_by_id_and_by_email_without_key_material(
    client: httpx.AsyncClient,
) -> None:
    user = await register(client, "Grace@Example.com")
    by_id = await client.get(f"/auth/users/{user['userId']}", headers=HEADERS)
    assert by_id.status_code == 200
    view = by_id.json()
    assert view["userId"] == user["userId"]
    assert (view["email"], view["plan"]) == ("grace@example.com", "FREE")
    assert view["keyPrefix"] == user["apiKey"][:10]
    assert set(view) == {"userId", "email", "plan", "keyPrefix", "createdAt", "version"}
    by_email = await client.get(
        "/auth/users", params={"email": " GRACE@example.com"}, headers=HEADERS
    )
    assert by_email.json() == {"data": [view]}
    none = await client.get("/auth/users", params={"email": "nobody@example.com"}, headers=HEADERS)
    assert none.json() == {"data": []}


async def test_set_plan_changes_what_verify_returns(client: httpx.AsyncClient) -> None:
    user = await register(client)
    path = f"/auth/users/{user['userId']}/plan"
    response = await client.put(path, json={"plan": "PRO"}, headers=HEADERS)
    assert response.status_code == 200
    assert (response.json()["plan"], response.json()["version"]) == ("PRO", 1)
    verified = await post(client, "/auth/verify", user["apiKey"])
    assert (verified.json()["plan"], verified.json()["version"]) == ("PRO", 1)
    again = await client.put(path, json={"plan": "FREE"}, headers=HEADERS)
    assert again.json()["version"] == 2  # every change counts, so caches can tell them apart


async def test_unknown_users_are_404(client: httpx.AsyncClient) -> None:
    missing = "0" * 24
    assert (await client.get(f"/auth/users/{missing}", headers=HEADERS)).status_code == 404
    response = await client.put(
        f"/auth/users/{missing}/plan", json={"plan": "PRO"}, headers=HEADERS
    )
    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/auth/users/not-an-id", None),
        ("GET", "/auth/users/" + "A" * 24, None),
        ("GET", "/auth/users?email=nope", None),
        ("GET", "/auth/users", None),
        ("PUT", "/auth/users/" + "a" * 24 + "/plan", {"plan": "GOLD"}),
        ("PUT", "/auth/users/" + "a" * 24 + "/plan", {"plan": {"$ne": None}}),
        ("PUT", "/auth/users/" + "a" * 24 + "/plan", {"plan": "PRO", "extra": 1}),
    ],
)
async def test_user_routes_reject_invalid_input_with_400(
    client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    response = await client.request(method, path, json=body, headers=HEADERS)
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/auth/keys/rotate"),
        ("POST", "/auth/keys/revoke"),
        ("GET", "/auth/users?email=a@example.com"),
        ("PUT", "/auth/users/" + "a" * 24 + "/plan"),
    ],
)
async def test_new_routes_require_the_internal_token(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, json={"apiKey": "sk_x", "plan": "PRO"})
    assert response.status_code == 401
    assert response.json()["code"] == "internal_auth_failed"
