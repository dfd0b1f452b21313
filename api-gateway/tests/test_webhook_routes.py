"""The gateway's webhook routes: each is the caller's own webhook at usage-service, refusals pass
through as they are, and changes (not reads) count against the rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from gateway_downstream import USER_ID, VALID_KEY, Downstream

KEY = {"x-api-key": VALID_KEY}
HOOK = f"/usage/{USER_ID}/webhook"
WEBHOOK = {
    "url": "https://hooks.example.com/quota",
    "thresholds": [80, 100],
    "createdAt": "2026-01-02T03:04:05Z",
    "updatedAt": "2026-01-02T03:04:05Z",
}


def reply(status: int, body: object) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(status, json=body)


@pytest.fixture
async def gateway(
    open_gateway: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
) -> AsyncIterator[httpx.AsyncClient]:
    async with open_gateway() as client:  # 3 requests per window
        yield client


async def test_setting_a_webhook_sets_the_callers_own_with_default_thresholds(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    created = {**WEBHOOK, "secret": "whsec_c2VjcmV0"}
    downstream.override("usage", HOOK, reply(200, created))
    response = await gateway.put("/v1/webhook", json={"url": WEBHOOK["url"]}, headers=KEY)
    assert response.status_code == 200, response.text
    assert response.json()["secret"] == "whsec_c2VjcmV0"
    assert downstream.bodies("usage", HOOK) == [{"url": WEBHOOK["url"], "thresholds": [80, 100]}]


async def test_a_refused_url_is_usage_services_400_as_it_is(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    refusal = {"message": "The webhook URL's host resolves to a private address (10.0.0.7)"}
    downstream.override("usage", HOOK, reply(400, {**refusal, "code": "webhook_url_refused"}))
    response = await gateway.put("/v1/webhook", json={"url": "http://10.0.0.7/"}, headers=KEY)
    assert response.status_code == 400
    assert response.json()["message"] == refusal["message"]
    assert response.json()["code"] == "webhook_url_refused"


async def test_bad_thresholds_are_refused_before_usage_service(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    for thresholds in ([0], [101], ["80"]):  # (the window holds 3)
        body = {"url": WEBHOOK["url"], "thresholds": thresholds}
        response = await gateway.put("/v1/webhook", json=body, headers=KEY)
        assert response.status_code == 400, thresholds
    assert downstream.paths("usage") == []


async def test_webhook_routes_need_a_key(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    for method, path in (
        ("GET", "/v1/webhook"),
        ("DELETE", "/v1/webhook"),
        ("POST", "/v1/webhook/secret"),
        ("GET", "/v1/webhook/deliveries"),
    ):
        response = await gateway.request(method, path)
        assert (response.status_code, response.json()["code"]) == (401, "api_key_missing")
    assert downstream.calls == []


async def test_changes_count_against_the_rate_limit_and_reads_do_not(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    downstream.override("usage", HOOK, reply(200, WEBHOOK))
    downstream.override("usage", f"{HOOK}/deliveries", reply(200, {"data": []}))
    for _ in range(5):
        assert (await gateway.get("/v1/webhook", headers=KEY)).status_code == 200
        read = await gateway.get("/v1/webhook/deliveries?limit=5", headers=KEY)
        assert read.status_code == 200
    statuses = [
        (await gateway.put("/v1/webhook", json={"url": WEBHOOK["url"]}, headers=KEY)).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    assert read.headers["x-ratelimit-limit-requests"] == "3"
