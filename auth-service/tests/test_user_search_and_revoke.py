"""auth-service's user search (email prefix, paged by email) and an operator's revocation of a
user's key by user id, against a real MongoDB-protocol server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from auth_calls import HEADERS, post
from auth_service.repository import email_range
from pymongo import AsyncMongoClient


async def register(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    response = await post(client, "/auth/register", {"email": email})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def search(client: httpx.AsyncClient, **params: Any) -> httpx.Response:
    return await client.get("/auth/users", params=params, headers=HEADERS)


async def every_page(client: httpx.AsyncClient, text: str, limit: int) -> list[list[str]]:
    """The emails of each page of a search, following `nextCursor` to the end."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params = {"search": text, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await search(client, **params)
        assert response.status_code == 200, response.text
        pages.append([user["email"] for user in response.json()["data"]])
        cursor = response.json()["nextCursor"]
        if cursor is None:
            return pages


async def test_search_pages_the_users_whose_email_starts_with_it_in_email_order(
    client: httpx.AsyncClient,
) -> None:
    tag = uuid.uuid4().hex[:6]
    emails = [f"zed-{tag}-{n}@example.com" for n in (3, 1, 6, 0, 5, 2, 4)]
    for email in [*emails, f"zeb-{tag}@example.com", f"x-zed-{tag}@example.com"]:
        await register(client, email)
    pages = await every_page(client, f" ZED-{tag}", limit=3)
    assert pages == [sorted(emails)[:3], sorted(emails)[3:6], sorted(emails)[6:]]


async def test_an_empty_search_lists_every_user(client: httpx.AsyncClient) -> None:
    emails = [f"{name}-{uuid.uuid4().hex[:6]}@example.com" for name in ("b", "a", "c")]
    for email in emails:
        await register(client, email)  # the database is this test's own
    assert await every_page(client, "", limit=2) == [sorted(emails)[:2], sorted(emails)[2:]]


async def test_search_matches_a_prefix_not_a_substring(client: httpx.AsyncClient) -> None:
    email = f"ann-{uuid.uuid4().hex[:6]}@example.com"
    await register(client, email)
    assert await every_page(client, email[1:8], limit=5) == [[]]
    assert await every_page(client, email[:8], limit=5) == [[email]]


@pytest.mark.parametrize("text", ["a.b", "a.*", "a[.]b", "(a", "a\\", "^a", "a|b", "$where"])
async def test_search_text_is_plain_text_not_a_pattern(
    client: httpx.AsyncClient, text: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    dotted, other = f"a.b+{tag}@example.com", f"axb+{tag}@example.com"
    await register(client, dotted)
    await register(client, other)
    found = (await every_page(client, text, limit=10))[0]
    assert found == ([dotted] if dotted.startswith(text) else [])


async def test_search_ignores_case_beyond_ascii(client: httpx.AsyncClient) -> None:
    email = f"ünïcode-{uuid.uuid4().hex[:6]}@example.com"
    await register(client, email)
    assert await every_page(client, "ÜNÏCODE", limit=5) == [[email]]
    assert await every_page(client, "\U0010ffff", limit=5) == [[]]  # no upper bound there


@pytest.mark.parametrize(
    "params",
    [
        {"search": "a", "cursor": "!!"},
        {"search": "a", "cursor": "AAAA"},  # decodes to NUL bytes: not an email we made
        {"search": "a", "cursor": "_w"},  # not UTF-8
        {"search": "a", "limit": 0},
        {"search": "a", "limit": 101},
        {"search": "a\x00"},
        {"search": "a", "email": "a@example.com"},
        {},
    ],
)
async def test_a_bad_search_is_refused_with_400(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    response = await search(client, **params)
    assert response.status_code == 400, response.text


async def test_the_search_range_is_served_by_the_email_index(
    client: httpx.AsyncClient, db_uri: str
) -> None:
    await register(client, f"i-{uuid.uuid4().hex[:6]}@example.com")  # the app made its indexes
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(db_uri)
    try:
        plan = await mongo.get_default_database().command(
            "explain",
            {"find": "users", "filter": email_range("ann", after="ann-1@example.com")},
            verbosity="queryPlanner",
        )
    finally:
        await mongo.close()
    winning = plan["queryPlanner"]["winningPlan"]
    assert winning["inputStage"]["indexName"] == "email_unique", winning


async def test_revoking_by_user_id_leaves_no_working_key_and_is_a_change(
    client: httpx.AsyncClient,
) -> None:
    before = int(datetime.now(UTC).timestamp() * 1000) - 1
    user = await register(client, f"r-{uuid.uuid4().hex[:6]}@example.com")
    path = f"/auth/users/{user['userId']}/key"
    response = await client.delete(path, headers=HEADERS)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "message": "API key revoked",
        "userId": user["userId"],
        "version": 1,
    }
    assert (await post(client, "/auth/verify", {"apiKey": user["apiKey"]})).status_code == 401
    view = await client.get(f"/auth/users/{user['userId']}", headers=HEADERS)
    assert view.json()["keyPrefix"] is None
    changes = await client.get("/auth/changes", params={"since": before}, headers=HEADERS)
    assert {"userId": user["userId"], "version": 1} in changes.json()["changes"]
    again = await client.delete(path, headers=HEADERS)
    assert (again.status_code, again.json()["version"]) == (200, 2)
    issued = await client.post(path, headers=HEADERS)  # the operator's way back still works
    assert (await post(client, "/auth/verify", {"apiKey": issued.json()["apiKey"]})).is_success


async def test_revoking_an_unknown_or_malformed_user_id_is_refused(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.delete(f"/auth/users/{'0' * 24}/key", headers=HEADERS)
    assert (missing.status_code, missing.json()["code"]) == (404, "user_not_found")
    malformed = await client.delete("/auth/users/not-an-id/key", headers=HEADERS)
    assert malformed.status_code == 400


@pytest.mark.parametrize(
    ("method", "path"), [("DELETE", f"/auth/users/{'a' * 24}/key"), ("GET", "/auth/users?search=")]
)
async def test_search_and_revoke_require_the_internal_token(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)
    assert (response.status_code, response.json()["code"]) == (401, "internal_auth_failed")
