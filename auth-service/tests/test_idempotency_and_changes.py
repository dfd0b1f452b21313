"""auth-service: idempotent register and rotate (the same Idempotency-Key gives the same key, no
key stored), an operator's re-issue, the stamped change feed gateways follow, and one exact form
per key (real Mongo)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from auth_calls import HEADERS, new_email, post
from pymongo import AsyncMongoClient

AGAIN = "3b4c1c9e-5d2a-4a47-8f36-1f0e2d3c4b5a"


async def stored(db_uri: str, collection: str) -> list[dict[str, Any]]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(db_uri)
    try:
        return await mongo.get_default_database()[collection].find().to_list()
    finally:
        await mongo.close()


async def test_a_repeated_registration_returns_the_same_key_and_makes_one_user(
    client: httpx.AsyncClient, db_uri: str
) -> None:
    body = {"email": new_email(), "idempotencyKey": AGAIN}
    answers = [await post(client, "/auth/register", body) for _ in range(2)]
    concurrent = await asyncio.gather(*(post(client, "/auth/register", body) for _ in range(3)))
    assert {a.status_code for a in [*answers, *concurrent]} == {201}
    assert len({a.json()["apiKey"] for a in [*answers, *concurrent]}) == 1
    assert len({a.json()["userId"] for a in [*answers, *concurrent]}) == 1
    assert len(await stored(db_uri, "users")) == 1
    verified = await post(client, "/auth/verify", {"apiKey": answers[0].json()["apiKey"]})
    assert verified.status_code == 200
    records = await stored(db_uri, "idempotency")
    key = answers[0].json()["apiKey"]
    assert key not in repr(records)  # no key material kept, only which user it was for


async def test_another_idempotency_key_for_a_taken_email_is_still_409(
    client: httpx.AsyncClient,
) -> None:
    email = new_email()
    assert (
        await post(client, "/auth/register", {"email": email, "idempotencyKey": "a"})
    ).status_code == 201
    other = await post(client, "/auth/register", {"email": email, "idempotencyKey": "b"})
    plain = await post(client, "/auth/register", {"email": email})
    assert (other.status_code, plain.status_code) == (409, 409)


async def test_a_repeated_rotation_with_the_old_key_returns_the_same_new_key(
    client: httpx.AsyncClient,
) -> None:
    old = (await post(client, "/auth/register", {"email": new_email()})).json()["apiKey"]
    body = {"apiKey": old, "idempotencyKey": AGAIN}
    first, repeat = [await post(client, "/auth/keys/rotate", body) for _ in range(2)]
    assert (first.status_code, repeat.status_code) == (200, 200)
    assert first.json()["apiKey"] == repeat.json()["apiKey"] != old
    assert (await post(client, "/auth/verify", {"apiKey": old})).status_code == 401
    new = first.json()["apiKey"]
    assert (await post(client, "/auth/verify", {"apiKey": new})).status_code == 200
    # Without the idempotency key, the old key is simply gone.
    assert (await post(client, "/auth/keys/rotate", {"apiKey": old})).status_code == 401


async def test_an_operator_issues_a_new_key_after_a_revocation(client: httpx.AsyncClient) -> None:
    user = (await post(client, "/auth/register", {"email": new_email()})).json()
    await post(client, "/auth/keys/revoke", {"apiKey": user["apiKey"]})
    issued = await client.post(f"/auth/users/{user['userId']}/key", headers=HEADERS)
    assert issued.status_code == 200
    body = issued.json()
    assert body["apiKey"] != user["apiKey"]
    assert body["version"] == 2  # revoke, then issue
    verified = await post(client, "/auth/verify", {"apiKey": body["apiKey"]})
    assert verified.json()["userId"] == user["userId"]
    missing = await client.post(f"/auth/users/{'f' * 24}/key", headers=HEADERS)
    assert missing.status_code == 404


async def test_the_change_feed_has_every_key_and_plan_change_since_a_moment(
    client: httpx.AsyncClient,
) -> None:
    since = int(time.time() * 1000) - 1
    user = (await post(client, "/auth/register", {"email": new_email()})).json()
    rotated = (await post(client, "/auth/keys/rotate", {"apiKey": user["apiKey"]})).json()
    await client.put(f"/auth/users/{user['userId']}/plan", json={"plan": "PRO"}, headers=HEADERS)
    feed = await client.get("/auth/changes", params={"since": since}, headers=HEADERS)
    assert feed.status_code == 200
    changes = [(c["userId"], c["version"]) for c in feed.json()["changes"]]
    assert changes == [(user["userId"], 2)]  # one document: its latest version
    assert rotated["version"] == 1
    later = await client.get(
        "/auth/changes", params={"since": feed.json()["until"] + 1}, headers=HEADERS
    )
    assert later.json()["changes"] == []


@pytest.mark.parametrize("suffix", ["\xa0", " ", "\u3000", "\n"])
async def test_a_key_with_anything_around_it_is_not_that_key(
    client: httpx.AsyncClient, suffix: str
) -> None:
    key = (await post(client, "/auth/register", {"email": new_email()})).json()["apiKey"]
    assert (await post(client, "/auth/verify", {"apiKey": key + suffix})).status_code == 401
    assert (await post(client, "/auth/verify", {"apiKey": suffix + key})).status_code == 401
    assert (await post(client, "/auth/verify", {"apiKey": key})).status_code == 200
