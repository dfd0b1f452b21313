"""Rate-limit headers: exact values at the boundaries, through the gateway app."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

import httpx
import pytest
import redis.asyncio as redis
from api_gateway.main import create_app
from api_gateway.rate_limit_headers import go_duration, ms_until_next_month
from fastapi import FastAPI
from gateway_downstream import VALID_KEY, Downstream, gateway_settings

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]
KEY = {"x-api-key": VALID_KEY}


@pytest.fixture
async def gateway(
    app_client: AppClient, redis_port: int, redis_client: redis.Redis, downstream: Downstream
) -> AsyncIterator[httpx.AsyncClient]:
    settings = gateway_settings(redis_port, free_rate_limit=2, rate_limit_window=30)
    async with app_client(create_app(settings, transport=downstream.transport())) as client:
        yield client


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0ms"),
        (350, "350ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (61_000, "1m1s"),
        (3_600_000, "1h0m0s"),
        (3_723_250, "1h2m3.25s"),
    ],
)
def test_go_durations(ms: int, text: str) -> None:
    assert go_duration(ms) == text


def test_the_token_window_ends_at_the_next_month() -> None:
    assert ms_until_next_month(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)) == 1000


async def test_chat_carries_both_header_families(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/v1/chat", json={"prompt": "hi"}, headers=KEY)
    assert response.status_code == 200
    headers = response.headers
    assert headers["ratelimit-policy"] == '"requests";q=2;w=30'
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "1"
    reset_s = int(headers["ratelimit"].rsplit("t=", 1)[1])
    assert headers["ratelimit"] == f'"requests";r=1;t={reset_s}'
    assert 29 <= reset_s <= 30
    # Tokens: what the reservation left, plus what settling gave back (12 tokens used).
    assert headers["x-ratelimit-limit-tokens"] == "5000"
    assert headers["x-ratelimit-remaining-tokens"] == str(5000 - 12)
    assert "retry-after" not in headers


async def test_the_last_allowed_request_has_zero_remaining_and_the_next_gets_retry_after(
    gateway: httpx.AsyncClient,
) -> None:
    await gateway.get("/test", headers=KEY)
    last = await gateway.get("/test", headers=KEY)
    refused = await gateway.get("/test", headers=KEY)
    assert last.status_code == 200
    assert last.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    retry_ms = int(refused.headers["retry-after-ms"])
    assert 0 < retry_ms <= 30_000
    # Never earlier than the real reset, and equal to the IETF `t`.
    assert int(refused.headers["retry-after"]) == math.ceil(retry_ms / 1000)
    assert refused.headers["ratelimit"] == f'"requests";r=0;t={math.ceil(retry_ms / 1000)}'


async def test_reading_usage_shows_the_window_without_using_it(gateway: httpx.AsyncClient) -> None:
    first = await gateway.get("/v1/usage", headers=KEY)
    second = await gateway.get("/v1/usage", headers=KEY)
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert second.headers["x-ratelimit-remaining-requests"] == "2"
    assert second.headers["x-ratelimit-remaining-tokens"] == "3750"


async def test_unauthenticated_responses_carry_no_rate_limit_headers(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.post("/v1/chat", json={"prompt": "hi"})
    assert response.status_code == 401
    assert "x-ratelimit-limit-requests" not in response.headers
