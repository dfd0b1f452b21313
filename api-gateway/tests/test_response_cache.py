"""The response cache: a repeated deterministic chat is answered from Redis without the model,
per user unless shared, charged per CACHE_HIT_CHARGE, bounded in time and size; and what the
request log learns of the answer (the backend that gave it, or CACHED)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from gateway_downstream import DONE, OTHER_KEY, USER_ID, VALID_KEY, Downstream, reply

Opener = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
ON = {"cache_ttl_seconds": 60, "free_rate_limit": 1000}
QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


def completion(**extra: Any) -> dict[str, Any]:
    return {"model": "llama3", "messages": QUESTION, "temperature": 0, **extra}


async def ask(gateway: httpx.AsyncClient, *, key: str = VALID_KEY, **extra: Any) -> httpx.Response:
    headers = {"x-api-key": key, **extra.pop("headers", {})}
    response = await gateway.post("/v1/chat/completions", json=completion(**extra), headers=headers)
    assert response.status_code == 200, response.text
    return response


async def entries(redis_client: redis.Redis) -> list[bytes]:
    return [key async for key in redis_client.scan_iter("infergate:cache:*")]


async def kept(redis_client: redis.Redis, count: int = 1, *, timeout_s: float = 5.0) -> None:
    """Wait until `count` answers are in the cache (they are written after the answer)."""
    deadline = time.monotonic() + timeout_s
    while len(await entries(redis_client)) < count:
        assert time.monotonic() < deadline, "the answer was never kept"
        await asyncio.sleep(0.01)


def model_calls(downstream: Downstream) -> int:
    return len(downstream.bodies("ai", "/ai/generate"))


async def test_a_repeated_deterministic_chat_is_answered_without_calling_the_model(
    open_gateway: Opener, downstream: Downstream, redis_client: redis.Redis
) -> None:
    async with open_gateway(**ON) as gateway:
        first = await ask(gateway)
        await kept(redis_client)
        second = await ask(gateway)
    assert (first.headers["x-infergate-cache"], second.headers["x-infergate-cache"]) == (
        "miss",
        "hit",
    )
    assert model_calls(downstream) == 1
    answer = second.json()["choices"][0]["message"]["content"]
    assert answer == first.json()["choices"][0]["message"]["content"] == "Hi!"
    # Free by default: nothing reserved for the hit, logged as CACHED with the answer's counts.
    assert len(downstream.bodies("usage", "/usage/reserve")) == 1
    assert second.json()["usage"]["total_tokens"] == 0
    [logged] = downstream.bodies("usage", "/usage/attempts")
    assert (logged["status"], logged["promptTokens"], logged["completionTokens"]) == (
        "CACHED",
        9,
        3,
    )


async def test_a_hit_is_charged_its_counts_when_hits_are_charged_in_full(
    open_gateway: Opener, downstream: Downstream, redis_client: redis.Redis
) -> None:
    async with open_gateway(**ON, cache_hit_charge="full") as gateway:
        await ask(gateway)
        await kept(redis_client)
        second = await ask(gateway)
        settled = await downstream.settled(2)
    assert second.headers["x-infergate-cache"] == "hit"
    assert model_calls(downstream) == 1
    reserved = downstream.bodies("usage", "/usage/reserve")[1]
    assert (reserved["tokens"], reserved["minTokens"]) == (12, 12)
    hit = next(s for s in settled if s["status"] == "CACHED")
    assert (hit["promptTokens"], hit["completionTokens"]) == (9, 3)
    assert second.json()["usage"]["total_tokens"] == 12


async def test_no_answer_crosses_users_unless_answers_are_shared(
    open_gateway: Opener, downstream: Downstream, redis_client: redis.Redis
) -> None:
    other = {"valid": True, "userId": "b" * 24, "plan": "FREE", "version": 0}

    def verify(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["apiKey"] == OTHER_KEY:
            return httpx.Response(200, json=other)
        return downstream.answer("auth", "/auth/verify", request)

    downstream.override("auth", "/auth/verify", verify)
    downstream.override("usage", f"/usage/{other['userId']}", reply(200, {**_month("b" * 24)}))
    async with open_gateway(**ON) as gateway:
        await ask(gateway)
        await kept(redis_client)
        theirs = await ask(gateway, key=OTHER_KEY)
    assert theirs.headers["x-infergate-cache"] == "miss"
    assert model_calls(downstream) == 2

    await redis_client.flushall()
    async with open_gateway(**ON, cache_shared=True) as gateway:
        await ask(gateway)
        await kept(redis_client)
        shared = await ask(gateway, key=OTHER_KEY)
    assert shared.headers["x-infergate-cache"] == "hit"
    assert model_calls(downstream) == 3


def _month(user_id: str) -> dict[str, Any]:
    return {
        "userId": user_id,
        "period": "2026-11",
        "usedTokens": 0,
        "reservedTokens": 0,
        "monthlyTokenLimit": 5000,
        "remainingTokens": 5000,
    }


@pytest.mark.parametrize(
    ("sampling", "cache_all", "cached"),
    [
        ({"temperature": 0.7}, False, False),
        ({"temperature": 0.7, "seed": 11}, False, True),
        ({"temperature": 0.7}, True, True),
    ],
)
async def test_only_deterministic_requests_are_cached_unless_every_request_is(
    open_gateway: Opener,
    downstream: Downstream,
    redis_client: redis.Redis,
    sampling: dict[str, Any],
    cache_all: bool,
    cached: bool,
) -> None:
    async with open_gateway(**ON, cache_all_requests=cache_all) as gateway:
        await ask(gateway, **sampling)
        if cached:
            await kept(redis_client)
        again = await ask(gateway, **sampling)
    assert again.headers["x-infergate-cache"] == ("hit" if cached else "miss")
    assert model_calls(downstream) == (1 if cached else 2)
    assert bool(await entries(redis_client)) is cached


async def test_no_cache_asks_the_model_again_and_no_store_keeps_nothing(
    open_gateway: Opener, downstream: Downstream, redis_client: redis.Redis
) -> None:
    async with open_gateway(**ON) as gateway:
        await ask(gateway, headers={"cache-control": "no-store"})
        assert await entries(redis_client) == []
        await ask(gateway)
        await kept(redis_client)
        fresh = await ask(gateway, headers={"cache-control": "no-cache"})
        assert fresh.headers["x-infergate-cache"] == "miss"
        assert (await ask(gateway)).headers["x-infergate-cache"] == "hit"
    assert model_calls(downstream) == 3


async def test_an_answer_expires_after_its_ttl(
    open_gateway: Opener, downstream: Downstream, redis_client: redis.Redis
) -> None:
    async with open_gateway(**{**ON, "cache_ttl_seconds": 1}) as gateway:
        await ask(gateway)
        await kept(redis_client)
        deadline = time.monotonic() + 10
        while await entries(redis_client):
            assert time.monotonic() < deadline, "the entry outlived its TTL"
            await asyncio.sleep(0.05)
        after = await ask(gateway)
    assert after.headers["x-infergate-cache"] == "miss"
    assert model_calls(downstream) == 2


async def test_the_oldest_answers_go_first_over_the_entry_bound(
    open_gateway: Opener, redis_client: redis.Redis
) -> None:
    async with open_gateway(**ON, cache_max_entries=2) as gateway:
        for n in range(3):
            await ask(gateway, seed=n)
            await kept(redis_client, min(n + 1, 2))
        deadline = time.monotonic() + 5
        while await redis_client.zcard("infergate:cache-index") > 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert len(await entries(redis_client)) == 2
        hits = [(await ask(gateway, seed=n)).headers["x-infergate-cache"] for n in range(3)]
    assert hits == ["miss", "hit", "hit"]


async def test_a_streamed_hit_replays_the_original_events_byte_for_byte(
    open_gateway: Opener, downstream: Downstream, redis_client: redis.Redis
) -> None:
    ndjson = b"".join(
        json.dumps(event).encode() + b"\n"
        for event in (
            {"type": "delta", "content": "Fo"},
            {"type": "delta", "content": "ur"},
            {"type": "delta", "content": "."},
            DONE,
        )
    )
    downstream.override("ai", "/ai/generate", lambda _: httpx.Response(200, content=ndjson))
    body = {"prompt": "What is 2 + 2?", "stream": True}
    async with open_gateway(**ON, cache_hit_charge="full", cache_all_requests=True) as gateway:
        first = await gateway.post("/v1/chat", json=body, headers={"x-api-key": VALID_KEY})
        await kept(redis_client)
        second = await gateway.post("/v1/chat", json=body, headers={"x-api-key": VALID_KEY})
    assert second.headers["x-infergate-cache"] == "hit"
    assert second.headers["content-type"].startswith("text/event-stream")
    assert second.content == first.content
    assert b'"output":"Fo"' in second.content
    assert model_calls(downstream) == 1


async def test_a_hit_still_counts_against_the_rate_limit(
    open_gateway: Opener, downstream: Downstream, redis_client: redis.Redis
) -> None:
    async with open_gateway(cache_ttl_seconds=60, free_rate_limit=2) as gateway:
        await ask(gateway)
        await kept(redis_client)
        await ask(gateway)
        limited = await gateway.post(
            "/v1/chat/completions", json=completion(), headers={"x-api-key": VALID_KEY}
        )
    assert limited.status_code == 429
    assert model_calls(downstream) == 1
    assert USER_ID in {body["userId"] for body in downstream.bodies("usage", "/usage/attempts")}


async def test_the_backend_that_answered_goes_to_the_request_log(
    open_gateway: Opener, downstream: Downstream
) -> None:
    downstream.generation = {**downstream.generation, "backend": "gpu-b"}
    async with open_gateway() as gateway:
        response = await gateway.post(
            "/v1/chat", json={"prompt": "hi"}, headers={"x-api-key": VALID_KEY}
        )
        assert response.status_code == 200
        [settled] = await downstream.settled(1)
    assert (settled["status"], settled["backend"]) == ("SUCCESS", "gpu-b")
