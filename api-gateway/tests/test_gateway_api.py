"""The gateway's public API with auth, usage and ai replaced at the HTTP edge, and real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from api_gateway.config import Settings
from api_gateway.main import create_app
from fastapi import FastAPI
from gateway_downstream import OTHER_KEY, TOKEN, USER_ID, VALID_KEY, Downstream
from gateway_downstream import gateway_settings as stand_in_settings

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]
KEY = {"x-api-key": VALID_KEY}


def gateway_settings(redis_port: int, **overrides: Any) -> Settings:
    return stand_in_settings(redis_port, **{"free_rate_limit": 3, **overrides})


@pytest.fixture
async def gateway(
    app_client: AppClient, downstream: Downstream, redis_port: int, redis_client: redis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gateway_settings(redis_port), transport=downstream.transport())
    async with app_client(app) as client:
        yield client


async def chat(
    client: httpx.AsyncClient, prompt: object = "Hello", **headers: str
) -> httpx.Response:
    return await client.post("/v1/chat", json={"prompt": prompt}, headers={**KEY, **headers})


async def test_chat_reserves_then_generates_then_settles(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    response = await chat(gateway, "Hello")
    assert response.status_code == 200
    assert response.json() == {"output": "Hi!", "tokensUsed": 12}
    settled = (await downstream.settled(1))[0]
    assert [(c.service, c.path) for c in downstream.calls] == [
        ("auth", "/auth/verify"),
        ("usage", "/usage/reserve"),
        ("ai", "/ai/generate"),
        ("usage", "/usage/settlements"),
    ]
    reservation = downstream.bodies("usage", "/usage/reserve")[0]
    assert reservation["tokens"] == len(b"Hello") + 64 + 512
    assert reservation["minTokens"] == len(b"Hello") + 64 + 1
    assert (settled["status"], settled["promptTokens"], settled["completionTokens"]) == (
        "SUCCESS",
        9,
        3,
    )
    # One reservation, named by the gateway, and one chat start for both (its month).
    assert settled["reservationId"] == reservation["reservationId"]
    assert settled["startedAt"] == reservation["startedAt"]
    assert downstream.bodies("ai", "/ai/generate")[0]["maxTokens"] == 512


async def test_every_internal_call_carries_the_request_id_and_token(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    response = await chat(gateway, **{"x-request-id": "client-id-123"})
    assert response.headers["x-request-id"] == "client-id-123"
    assert {c.headers["x-request-id"] for c in downstream.calls} == {"client-id-123"}
    assert {c.headers["x-internal-token"] for c in downstream.calls} == {TOKEN}


@pytest.mark.parametrize("bad_id", ["x" * 129, "has space", "semi;colon", ""])
async def test_unsafe_request_ids_are_replaced(
    gateway: httpx.AsyncClient, downstream: Downstream, bad_id: str
) -> None:
    response = await gateway.get("/healthz", headers={"x-request-id": bad_id})
    new_id = response.headers["x-request-id"]
    assert new_id != bad_id
    assert len(new_id) == 32


async def test_quota_exhausted_is_403_before_the_model_runs(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    downstream.override(
        "usage",
        "/usage/reserve",
        lambda _: httpx.Response(
            403, json={"message": "Token quota exceeded", "code": "quota_exceeded"}
        ),
    )
    response = await chat(gateway)
    assert response.status_code == 403
    assert response.json()["message"] == "Token quota exceeded"
    assert downstream.paths("ai") == []


@pytest.mark.parametrize(
    ("reply", "status", "settle_status"),
    [
        (
            lambda _: httpx.Response(
                504, json={"message": "AI service timeout", "code": "llm_timeout"}
            ),
            504,
            "TIMEOUT",
        ),
        (
            lambda _: httpx.Response(
                503, json={"message": "LLM unavailable", "code": "llm_unavailable"}
            ),
            503,
            "UPSTREAM_ERROR",
        ),
    ],
)
async def test_a_failed_model_call_releases_the_reservation(
    gateway: httpx.AsyncClient,
    downstream: Downstream,
    reply: Callable[[httpx.Request], httpx.Response],
    status: int,
    settle_status: str,
) -> None:
    downstream.override("ai", "/ai/generate", reply)
    response = await chat(gateway)
    assert response.status_code == status
    settled = await downstream.settled(1)
    assert len(settled) == 1
    assert (settled[0]["status"], settled[0]["promptTokens"], settled[0]["completionTokens"]) == (
        settle_status,
        0,
        0,
    )


async def test_gateway_timeout_to_the_ai_service_is_504_ai_service_timeout(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    downstream.override("ai", "/ai/generate", slow)
    response = await chat(gateway)
    assert response.status_code == 504
    assert response.json()["message"] == "AI service timeout"


@pytest.mark.parametrize("service", ["auth", "usage", "ai"])
async def test_an_unreachable_internal_service_is_503_never_401_or_500(
    gateway: httpx.AsyncClient, downstream: Downstream, service: str
) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    path = {"auth": "/auth/verify", "usage": "/usage/reserve", "ai": "/ai/generate"}[service]
    downstream.override(service, path, refused)
    response = await chat(gateway)
    assert response.status_code == 503
    assert response.json()["requestId"] == response.headers["x-request-id"]


async def test_missing_and_unknown_keys_are_401(gateway: httpx.AsyncClient) -> None:
    missing = await gateway.post("/v1/chat", json={"prompt": "x"})
    unknown = await gateway.post("/v1/chat", json={"prompt": "x"}, headers={"x-api-key": OTHER_KEY})
    assert (missing.status_code, missing.json()["message"]) == (401, "API key missing")
    assert (unknown.status_code, unknown.json()["message"]) == (401, "Invalid API key")


async def test_chat_is_429_with_retry_after_past_the_plan_limit(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    statuses = [(await chat(gateway)).status_code for _ in range(3)]
    limited = await chat(gateway)
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json()["message"] == "Too many requests. Try again later."
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    attempts = downstream.bodies("usage", "/usage/attempts")
    assert [a["status"] for a in attempts] == ["RATE_LIMITED"]


@pytest.mark.parametrize("prompt", ["", "   ", 42, None, ["x"], {"$ne": None}])
async def test_a_bad_prompt_is_400_and_uses_no_rate_limit_slot(
    gateway: httpx.AsyncClient, redis_client: redis.Redis, prompt: object
) -> None:
    response = await chat(gateway, prompt)
    assert response.status_code == 400
    assert response.json()["message"] == "Prompt is required"
    assert await redis_client.zcard("rate_limit:{" + USER_ID + "}") == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"{not json", "application/json"), (b"", "application/json"), (b"prompt=x", "text/plain")],
)
async def test_malformed_bodies_are_400_json(
    gateway: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    response = await gateway.post(
        "/v1/chat", content=content, headers={**KEY, "content-type": content_type}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"


async def test_unknown_fields_are_400(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/v1/chat", json={"prompt": "x", "temp": 1}, headers=KEY)
    assert response.status_code == 400
    assert "temp" in response.json()["message"]


async def test_a_model_outside_the_allow_list_is_404_before_anything_is_reserved(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    response = await gateway.post("/v1/chat", json={"prompt": "x", "model": "gpt-4"}, headers=KEY)
    assert response.status_code == 404
    assert response.json()["code"] == "model_not_found"
    assert downstream.paths("usage") == []


async def test_the_default_model_may_be_named_with_or_without_its_tag(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    response = await gateway.post(
        "/v1/chat", json={"prompt": "x", "model": "llama3:latest"}, headers=KEY
    )
    assert response.status_code == 200
    assert downstream.bodies("ai", "/ai/generate")[0]["model"] == "llama3"


async def test_usage_reports_the_month_in_the_original_shape(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/v1/usage", headers=KEY)
    assert response.json() == {
        "usedTokens": 1250,
        "monthlyLimit": 5000,
        "remainingTokens": 3750,
        "percentageUsed": 25.0,
    }


async def test_register_is_limited_per_client_address(
    app_client: AppClient, downstream: Downstream, redis_port: int, redis_client: redis.Redis
) -> None:
    settings = gateway_settings(redis_port, registration_rate_limit=2)
    async with app_client(create_app(settings, transport=downstream.transport())) as client:

        async def register(address: str) -> int:
            response = await client.post(
                "/v1/register", json={"email": "a@example.com"}, headers={"x-real-ip": address}
            )
            return response.status_code

        first = [await register("10.0.0.1") for _ in range(3)]
        other = await register("10.0.0.2")
    assert first == [201, 201, 429]
    assert other == 201


async def test_register_passes_on_409_and_rejects_bad_email(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    bad = await gateway.post("/v1/register", json={"email": "nope"})
    downstream.override(
        "auth",
        "/auth/register",
        lambda _: httpx.Response(
            409, json={"message": "User already exists", "code": "user_already_exists"}
        ),
    )
    taken = await gateway.post("/v1/register", json={"email": "a@example.com"})
    assert (bad.status_code, taken.status_code) == (400, 409)
    assert taken.json()["message"] == "User already exists"


async def test_concurrent_chats_of_one_user_share_one_window(
    gateway: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(*(chat(gateway) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 7
