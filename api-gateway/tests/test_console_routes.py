"""The routes the web console reads: your usage per day and request log (/v1), the operator's user
search, key revocation, everyone's usage per day and top users (/admin), with auth and usage
replaced at the HTTP edge and real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from api_gateway.key_versions import version_key
from gateway_downstream import AS_ADMIN, USER, USER_ID, VALID_KEY, Downstream, reply

KEY = {"x-api-key": VALID_KEY}
Opener = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
DAILY = {
    "period": "2026-02",
    "days": [
        {"date": "2026-02-01", "requests": 3, "tokens": 36, "errors": 1, "refused": 1},
        {"date": "2026-02-02", "requests": 0, "tokens": 0, "errors": 0, "refused": 0},
    ],
}
PAGE = {
    "data": [
        {
            "requestId": "r-1",
            "model": "llama3",
            "status": "SUCCESS",
            "period": "2026-02",
            "promptTokens": 9,
            "completionTokens": 3,
            "tokensUsed": 12,
            "responseTimeMs": 40.5,
            "createdAt": "2026-02-02T03:04:05.123000Z",
        }
    ],
    "nextCursor": "MTIzOmFiYw",
}
TOP = {"period": "2026-02", "data": [{"userId": USER_ID, "tokens": 1200, "requests": 40}]}


class Seen:
    """Answers one internal route with `body`, keeping the requests it got."""

    def __init__(self, body: Any, status: int = 200) -> None:
        self.body, self.status = body, status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, json=self.body)

    def params(self) -> list[dict[str, str]]:
        return [dict(request.url.params) for request in self.requests]


@pytest.fixture
async def gateway(open_gateway: Opener) -> AsyncIterator[httpx.AsyncClient]:
    async with open_gateway() as client:
        yield client


# -- your own usage per day and request log ------------------------------------------------------


async def test_daily_usage_is_the_callers_own_this_month(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    seen = Seen(DAILY)
    downstream.override("usage", f"/usage/{USER_ID}/daily", seen)
    response = await gateway.get("/v1/usage/daily", headers=KEY)
    assert response.status_code == 200, response.text
    assert response.json() == DAILY
    assert seen.params() == [{}]  # this month: usage-service's clock decides which
    # The window and the month's tokens, as on every authenticated response.
    assert response.headers["x-ratelimit-limit-requests"] == "3"
    assert response.headers["x-ratelimit-limit-tokens"] == "5000"


async def test_daily_usage_passes_a_period_and_refuses_a_malformed_one(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    seen = Seen(DAILY)
    downstream.override("usage", f"/usage/{USER_ID}/daily", seen)
    assert (await gateway.get("/v1/usage/daily?period=2026-02", headers=KEY)).status_code == 200
    bad = await gateway.get("/v1/usage/daily?period=2026-2", headers=KEY)
    assert bad.status_code == 400
    assert "YYYY-MM" in bad.json()["message"]
    assert seen.params() == [{"period": "2026-02"}]


async def test_the_console_reads_do_not_use_the_rate_limit(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    downstream.override("usage", f"/usage/{USER_ID}/daily", Seen(DAILY))
    downstream.override("usage", f"/usage/{USER_ID}/requests", Seen(PAGE))
    for path in ("/v1/usage/daily", "/v1/requests") * 3:  # twice the FREE limit of 3
        assert (await gateway.get(path, headers=KEY)).status_code == 200
    test = await gateway.get("/test", headers=KEY)  # counted: the first of the window
    assert test.headers["x-ratelimit-remaining-requests"] == "2"


async def test_reads_wait_for_the_callers_chat_to_be_settled(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    applied: list[float] = []

    async def slow_settlement(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)
        applied.append(time.monotonic())
        return downstream.answer("usage", "/usage/settlements", request)

    read_at: list[float] = []

    def daily(_: httpx.Request) -> httpx.Response:
        read_at.append(time.monotonic())
        return httpx.Response(200, json=DAILY)

    downstream.override("usage", "/usage/settlements", slow_settlement)
    downstream.override("usage", f"/usage/{USER_ID}/daily", daily)
    chat = await gateway.post("/v1/chat", json={"prompt": "Hello"}, headers=KEY)
    assert chat.status_code == 200
    assert (await gateway.get("/v1/usage/daily", headers=KEY)).status_code == 200
    assert applied
    assert read_at
    assert read_at[0] > applied[0]


async def test_requests_list_the_callers_own_log_a_page_at_a_time(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    seen = Seen(PAGE)
    downstream.override("usage", f"/usage/{USER_ID}/requests", seen)
    first = await gateway.get("/v1/requests", headers=KEY)
    assert first.status_code == 200, first.text
    assert first.json() == PAGE
    after = await gateway.get("/v1/requests?limit=5&before=MTIzOmFiYw", headers=KEY)
    assert after.status_code == 200
    assert seen.params() == [{"limit": "20"}, {"limit": "5", "before": "MTIzOmFiYw"}]
    assert after.headers["x-ratelimit-limit-requests"] == "3"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/requests?limit=0",
        "/v1/requests?limit=101",
        "/v1/requests?before=%24where",
        "/v1/usage/daily?period=2026-13",
        "/v1/usage/daily?period=",
    ],
)
async def test_console_reads_refuse_bad_input_with_400_before_any_internal_call(
    gateway: httpx.AsyncClient, downstream: Downstream, path: str
) -> None:
    response = await gateway.get(path, headers=KEY)
    assert response.status_code == 400, response.text
    assert [c.path for c in downstream.calls if c.service == "usage"] == []


@pytest.mark.parametrize("path", ["/v1/usage/daily", "/v1/requests"])
async def test_console_reads_need_a_key(
    gateway: httpx.AsyncClient, downstream: Downstream, path: str
) -> None:
    assert (await gateway.get(path)).status_code == 401
    assert downstream.calls == []


async def test_console_reads_are_in_the_public_openapi_document(
    gateway: httpx.AsyncClient,
) -> None:
    paths = (await gateway.get("/openapi.json")).json()["paths"]
    assert {"/v1/usage/daily", "/v1/requests"} <= set(paths)
    daily = paths["/v1/usage/daily"]["get"]
    assert {"200", "400", "401"} <= set(daily["responses"])
    assert not [path for path in paths if path.startswith("/admin")]


# -- the operator's user search --------------------------------------------------------------------


async def test_admin_search_passes_text_limit_and_cursor_and_returns_the_page(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    seen = Seen({"data": [USER], "nextCursor": "YWRhQGV4YW1wbGUuY29t"})
    downstream.override("auth", "/auth/users", seen)
    response = await gateway.get(
        "/admin/users",
        params={"search": "Ada", "limit": 5, "cursor": "YWJj"},
        headers=AS_ADMIN,
    )
    assert response.status_code == 200, response.text
    user = {k: v for k, v in USER.items() if k != "version"}
    assert response.json() == {"data": [user], "nextCursor": "YWRhQGV4YW1wbGUuY29t"}
    last = await gateway.get("/admin/users?search=", headers=AS_ADMIN)  # empty: every user
    assert last.status_code == 200
    assert seen.params() == [
        {"search": "Ada", "limit": "5", "cursor": "YWJj"},
        {"search": "", "limit": "20"},
    ]


async def test_admin_email_lookup_keeps_its_shape(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    downstream.override("auth", "/auth/users", reply(200, {"data": [USER]}))
    response = await gateway.get("/admin/users?email=ada@example.com", headers=AS_ADMIN)
    assert set(response.json()) == {"data"}  # no nextCursor: one user at most, no pages


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?email=ada@example.com&search=ada",
        "?search=a&limit=0",
        "?search=a&limit=101",
        "?search=a&cursor=%24ne",
        "?search=a%00",
    ],
)
async def test_admin_search_refuses_bad_input_with_400(
    gateway: httpx.AsyncClient, downstream: Downstream, query: str
) -> None:
    response = await gateway.get(f"/admin/users{query}", headers=AS_ADMIN)
    assert response.status_code == 400, response.text
    assert downstream.calls == []


# -- the operator's revocation -------------------------------------------------------------------


async def test_admin_revokes_a_users_key_by_id_and_every_replica_learns_it(
    open_gateway: Opener, downstream: Downstream, redis_client: redis.Redis
) -> None:
    methods: list[str] = []

    def revoke(request: httpx.Request) -> httpx.Response:
        methods.append(request.method)
        return httpx.Response(
            200, json={"message": "API key revoked", "userId": USER_ID, "version": 5}
        )

    downstream.override("auth", f"/auth/users/{USER_ID}/key", revoke)
    async with open_gateway() as first, open_gateway() as second:
        assert (await second.get("/test", headers=KEY)).status_code == 200  # cached there
        response = await first.delete(f"/admin/users/{USER_ID}/key", headers=AS_ADMIN)
        assert response.status_code == 200, response.text
        assert response.json() == {"message": "API key revoked", "userId": USER_ID}
        assert methods == ["DELETE"]
        assert await redis_client.get(version_key(USER_ID)) == b"5"
        downstream.override(
            "auth", "/auth/verify", reply(401, {"message": "Invalid API key", "code": "x"})
        )
        # The other replica's cached verification (version 0) is stale at once.
        assert (await second.get("/test", headers=KEY)).status_code == 401


async def test_admin_revoke_of_an_unknown_user_is_404_and_announces_nothing(
    gateway: httpx.AsyncClient, downstream: Downstream, redis_client: redis.Redis
) -> None:
    missing = "0" * 24
    downstream.override(
        "auth",
        f"/auth/users/{missing}/key",
        reply(404, {"message": "User not found", "code": "user_not_found"}),
    )
    response = await gateway.delete(f"/admin/users/{missing}/key", headers=AS_ADMIN)
    assert (response.status_code, response.json()["code"]) == (404, "user_not_found")
    assert await redis_client.get(version_key(missing)) is None


# -- everyone's usage per day, top users ---------------------------------------------------------


async def test_admin_daily_totals_and_top_users_pass_period_and_limit(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    daily, top = Seen(DAILY), Seen(TOP)
    downstream.override("usage", "/usage/daily", daily)
    downstream.override("usage", "/usage/top", top)
    got_daily = await gateway.get("/admin/usage/daily?period=2026-02", headers=AS_ADMIN)
    assert (got_daily.status_code, got_daily.json()) == (200, DAILY)
    got_top = await gateway.get("/admin/usage/top?period=2026-02&limit=3", headers=AS_ADMIN)
    assert (got_top.status_code, got_top.json()) == (200, TOP)
    assert (await gateway.get("/admin/usage/top", headers=AS_ADMIN)).status_code == 200
    assert daily.params() == [{"period": "2026-02"}]
    assert top.params() == [{"period": "2026-02", "limit": "3"}, {"limit": "10"}]


@pytest.mark.parametrize(
    "path",
    [
        "/admin/usage/daily?period=2026-00",
        "/admin/usage/daily?period=26-01",
        "/admin/usage/top?limit=0",
        "/admin/usage/top?limit=101",
        "/admin/usage/top?period=2026-1",
    ],
)
async def test_admin_reports_refuse_bad_input_with_a_readable_400(
    gateway: httpx.AsyncClient, downstream: Downstream, path: str
) -> None:
    response = await gateway.get(path, headers=AS_ADMIN)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith("Invalid request: query.")
    assert downstream.calls == []


async def test_a_usage_service_failure_is_a_503_not_a_500(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    downstream.override(
        "usage", "/usage/daily", reply(503, {"message": "Database unavailable", "code": "x"})
    )
    response = await gateway.get("/admin/usage/daily", headers=AS_ADMIN)
    assert response.status_code == 503


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/usage/daily"),
        ("GET", "/admin/usage/top"),
        ("GET", "/admin/users?search="),
        ("DELETE", f"/admin/users/{USER_ID}/key"),
    ],
)
async def test_the_new_admin_routes_need_the_admin_token(
    gateway: httpx.AsyncClient, downstream: Downstream, method: str, path: str
) -> None:
    response = await gateway.request(method, path, headers=KEY)
    assert (response.status_code, response.json()["code"]) == (401, "admin_auth_failed")
    assert downstream.calls == []
