"""The API the web console reads, end to end on the running stack: a user's usage per day and
request log through nginx, the operator's search, totals, top users and revocation on a gateway,
and the API reference (/docs) through nginx with its files from the same origin."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from infergate_devstack.stack import Stack

from tests.fake_ollama_fixtures import FakeOllamaControl
from tests.helpers import ADMIN_TOKEN, chat

AS_ADMIN = {"x-admin-token": ADMIN_TOKEN}


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The admin API, on a gateway directly."""
    async with httpx.AsyncClient(
        base_url=stack.service_url("gateway"), timeout=30.0, headers=AS_ADMIN
    ) as client:
        yield client


async def register_as(api: httpx.AsyncClient, email: str) -> str:
    response = await api.post("/v1/register", json={"email": email})
    assert response.status_code == 201, response.text
    return str(response.json()["apiKey"])


async def get_json(client: httpx.AsyncClient, path: str, **kwargs: Any) -> Any:
    response = await client.get(path, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


async def user_id_of(gateway: httpx.AsyncClient, email: str) -> str:
    [user] = (await get_json(gateway, "/admin/users", params={"email": email}))["data"]
    return str(user["userId"])


async def test_a_users_day_shows_exactly_the_tokens_their_chats_reported_and_lists_them(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    key = {"x-api-key": api_key}
    charged = []
    for _ in range(3):
        response = await chat(api, api_key)
        assert response.status_code == 200, response.text
        charged.append(response.json()["tokensUsed"])
    await llm.configure(fail_status=500)
    assert (await chat(api, api_key)).status_code >= 500
    today = datetime.now(UTC).date()
    daily = await get_json(api, "/v1/usage/daily", headers=key)
    assert daily["period"] == this_month()
    assert [day["date"] for day in daily["days"]][-1] == today.isoformat()
    assert len(daily["days"]) == today.day
    busy = [day for day in daily["days"] if day["requests"]]
    assert busy == [
        {
            "date": today.isoformat(),
            "requests": 4,
            "tokens": sum(charged),
            "errors": 1,
            "refused": 0,
        }
    ]
    page = await get_json(api, "/v1/requests", params={"limit": 3}, headers=key)
    assert [entry["status"] for entry in page["data"]] == ["UPSTREAM_ERROR", "SUCCESS", "SUCCESS"]
    assert [entry["tokensUsed"] for entry in page["data"][1:]] == charged[:0:-1]
    last = await get_json(
        api, "/v1/requests", params={"limit": 3, "before": page["nextCursor"]}, headers=key
    )
    assert ([entry["tokensUsed"] for entry in last["data"]], last["nextCursor"]) == (
        charged[:1],
        None,
    )


async def test_a_refused_chat_counts_as_refused_not_as_an_error(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    too_long = "x" * 1000  # its prompt alone needs more than the month's 1,000 tokens
    refused = await chat(api, api_key, too_long)
    assert refused.status_code == 403, refused.text
    daily = await get_json(api, "/v1/usage/daily", headers={"x-api-key": api_key})
    [day] = [day for day in daily["days"] if day["requests"]]
    assert (day["requests"], day["tokens"], day["errors"], day["refused"]) == (1, 0, 0, 1)


async def test_the_operator_searches_users_by_email_prefix_a_page_at_a_time(
    api: httpx.AsyncClient, gateway: httpx.AsyncClient
) -> None:
    tag = uuid.uuid4().hex[:8]
    emails = sorted(f"find-{tag}-{n}@example.com" for n in range(5))
    for email in emails:
        await register_as(api, email)
    await register_as(api, f"other-find-{tag}@example.com")  # contains the text, not a prefix
    seen: list[str] = []
    params: dict[str, Any] = {"search": f"FIND-{tag}", "limit": 2}
    while True:
        page = await get_json(gateway, "/admin/users", params=params)
        seen += [user["email"] for user in page["data"]]
        if page["nextCursor"] is None:
            break
        params["cursor"] = page["nextCursor"]
    assert seen == emails
    exact = await get_json(gateway, "/admin/users", params={"email": emails[0].upper()})
    assert [user["email"] for user in exact["data"]] == [emails[0]]


async def test_the_operator_sees_the_month_totals_and_the_top_users(
    api: httpx.AsyncClient, gateway: httpx.AsyncClient, llm: FakeOllamaControl
) -> None:
    email = f"top-{uuid.uuid4().hex[:8]}@example.com"
    api_key = await register_as(api, email)
    user_id = await user_id_of(gateway, email)
    plan = await gateway.put(f"/admin/users/{user_id}/plan", json={"plan": "PRO"})
    assert plan.status_code == 200, plan.text
    before = await get_json(gateway, "/admin/usage/daily")
    await llm.configure(prompt_tokens=500, completion_tokens=100)  # 600 charged a chat
    charged = [(await chat(api, api_key, "y" * 600)).json()["tokensUsed"] for _ in range(3)]
    assert charged == [600, 600, 600]
    await get_json(api, "/v1/usage", headers={"x-api-key": api_key})  # its chats are settled
    top = await get_json(gateway, "/admin/usage/top", params={"limit": 100})
    assert top["period"] == this_month()
    ranked = [(row["userId"], row["tokens"], row["requests"]) for row in top["data"]]
    assert (user_id, 1800, 3) in ranked
    tokens = [row["tokens"] for row in top["data"]]
    assert tokens == sorted(tokens, reverse=True)
    after = await get_json(gateway, "/admin/usage/daily", params={"period": this_month()})
    today = datetime.now(UTC).date().isoformat()
    was, now = (
        next(day for day in body["days"] if day["date"] == today) for body in (before, after)
    )
    assert now["tokens"] - was["tokens"] >= 1800
    assert now["requests"] - was["requests"] >= 3
    assert 0 <= now["errors"] <= now["requests"]  # the error rate is errors / requests


async def test_the_operator_revokes_a_key_by_user_id_and_it_is_refused_at_once(
    api: httpx.AsyncClient, gateway: httpx.AsyncClient
) -> None:
    email = f"revoke-{uuid.uuid4().hex[:8]}@example.com"
    api_key = await register_as(api, email)
    key = {"x-api-key": api_key}
    assert (await api.get("/v1/usage", headers=key)).status_code == 200  # now cached
    user_id = await user_id_of(gateway, email)
    revoked = await gateway.delete(f"/admin/users/{user_id}/key")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"message": "API key revoked", "userId": user_id}
    assert (await api.get("/v1/usage", headers=key)).status_code == 401
    assert (await gateway.get(f"/admin/users/{user_id}")).json()["keyPrefix"] is None
    issued = await gateway.post(f"/admin/users/{user_id}/key")
    new_key = {"x-api-key": issued.json()["apiKey"]}
    assert (await api.get("/v1/usage/daily", headers=new_key)).status_code == 200


@pytest.mark.parametrize(
    "path", ["/v1/usage/daily?period=2026-13", "/v1/requests?limit=0", "/v1/requests?before=!"]
)
async def test_bad_console_reads_are_a_json_400(
    api: httpx.AsyncClient, api_key: str, path: str
) -> None:
    response = await api.get(path, headers={"x-api-key": api_key})
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"


async def test_the_api_reference_loads_its_files_from_the_same_origin_through_nginx(
    api: httpx.AsyncClient,
) -> None:
    page = await api.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    loaded = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', page.text)
    openapi = re.search(r'data-openapi-url="([^"]+)"', page.text)
    assert openapi is not None
    expected = {
        "swagger-ui-bundle.js": "text/javascript",
        "swagger-init.js": "text/javascript",
        "swagger-ui.css": "text/css",
        "favicon.png": "image/png",
    }
    assert {url.rsplit("/", 1)[-1] for url in loaded} == set(expected)
    for url in [*loaded, openapi[1]]:
        assert url.startswith("/"), url  # this origin: no scheme, no host
        asset = await api.get(url)
        assert asset.status_code == 200, f"{url}: {asset.status_code} {asset.text[:200]}"
        kind = expected.get(url.rsplit("/", 1)[-1], "application/json")
        assert asset.headers["content-type"].split(";")[0] == kind, url
        assert asset.content
