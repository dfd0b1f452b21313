"""A chat's cached key verification is checked in the same Redis round trip as its rate-limit
count (admission.count_chat): no separate version read, and a stale verification counts nothing
until the key is verified afresh. Auth and usage replaced at the HTTP edge, real Redis."""

from __future__ import annotations

import socket
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
import redis.asyncio as redis
from api_gateway.key_versions import KeyVersions
from gateway_downstream import AS_ADMIN, MONTH, USER, USER_ID, VALID_KEY, Downstream, reply
from recorded_metrics import Recorded

Opener = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
KEY = {"x-api-key": VALID_KEY}
WINDOW = "rate_limit:{" + USER_ID + "}"  # the user's hash tag: the slot of their key versions


@pytest.fixture
def downstream() -> Downstream:
    downstream = Downstream()
    downstream.override(
        "auth", f"/auth/users/{USER_ID}/plan", reply(200, {**USER, "plan": "PRO", "version": 1})
    )
    downstream.override("usage", f"/usage/{USER_ID}/plan", reply(200, MONTH))
    return downstream


async def chat(gateway: httpx.AsyncClient) -> httpx.Response:
    return await gateway.post("/v1/chat", json={"prompt": "Hello"}, headers=KEY)


def verify_calls(downstream: Downstream) -> int:
    return downstream.paths("auth").count("/auth/verify")


async def calls_of(client: redis.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if entry else 0


def versions(client: redis.Redis) -> KeyVersions:
    errors = Recorded().metrics.redis_errors.labels("key_versions")
    return KeyVersions(client, keep_seconds=60, errors=errors)


async def test_a_chat_with_a_cached_key_reads_no_version_apart_from_its_count(
    open_gateway: Opener, downstream: Downstream, redis_client: redis.Redis
) -> None:
    async with open_gateway() as gateway:
        assert (await chat(gateway)).status_code == 200  # verified by auth-service, cached
        reads = await calls_of(redis_client, "mget")
        for _ in range(2):
            answer = await chat(gateway)
            assert answer.status_code == 200
        assert answer.headers["x-ratelimit-remaining-requests"] == "0"  # 3 of FREE's 3
    assert verify_calls(downstream) == 1
    assert await calls_of(redis_client, "mget") == reads  # no separate version check
    assert await redis_client.zcard(WINDOW) == 3


async def test_a_key_revoked_through_another_replica_is_refused_and_counts_nothing(
    open_gateway: Opener, downstream: Downstream, redis_client: redis.Redis
) -> None:
    downstream.override("auth", "/auth/keys/revoke", reply(200, {"userId": USER_ID, "version": 1}))
    async with open_gateway() as first, open_gateway() as second:
        assert (await chat(second)).status_code == 200
        assert (await chat(second)).status_code == 200  # from its cache
        assert (await first.delete("/v1/keys/current", headers=KEY)).status_code == 200
        downstream.override(
            "auth", "/auth/verify", reply(401, {"message": "Invalid API key", "code": "x"})
        )
        refused = await chat(second)
        assert refused.status_code == 401
        assert refused.json()["message"] == "Invalid API key"
    assert await redis_client.zcard(WINDOW) == 2
    assert downstream.paths("auth").count("/auth/verify") == 3  # second, first, second again
    assert downstream.paths("usage").count("/usage/reserve") == 2
    assert downstream.paths("ai").count("/ai/generate") == 2


async def test_a_plan_changed_through_another_replica_counts_the_chat_under_the_new_plan(
    open_gateway: Opener, downstream: Downstream, redis_client: redis.Redis
) -> None:
    async with open_gateway() as first, open_gateway() as second:
        before = await chat(second)
        assert before.headers["x-ratelimit-limit-requests"] == "3"  # FREE
        change = await first.put(
            f"/admin/users/{USER_ID}/plan", json={"plan": "PRO"}, headers=AS_ADMIN
        )
        assert change.status_code == 200
        downstream.override(
            "auth", "/auth/verify", reply(200, {**USER, "valid": True, "plan": "PRO", "version": 1})
        )
        after = await chat(second)
    assert after.status_code == 200
    assert after.headers["x-ratelimit-limit-requests"] == "7"  # PRO, from this very chat
    assert after.headers["x-ratelimit-remaining-requests"] == "5"  # counted once: 2 of 7
    assert await redis_client.zcard(WINDOW) == 2


async def test_a_key_in_doubt_or_a_version_redis_lost_is_verified_afresh_and_counted_once(
    open_gateway: Opener, downstream: Downstream, redis_client: redis.Redis
) -> None:
    async with open_gateway() as gateway:
        assert (await chat(gateway)).status_code == 200
        assert (await chat(gateway)).status_code == 200
        assert verify_calls(downstream) == 1
        await versions(redis_client).doubt(USER_ID, VALID_KEY, seconds=30)
        assert (await chat(gateway)).status_code == 200
        assert verify_calls(downstream) == 2
        assert await redis_client.zcard(WINDOW) == 3
        await redis_client.flushall()  # Redis restarted without its data
        assert (await chat(gateway)).status_code == 200
        assert verify_calls(downstream) == 3
        assert await redis_client.zcard(WINDOW) == 1
        assert (await chat(gateway)).status_code == 200  # announced again: cached once more
        assert verify_calls(downstream) == 3
        assert await redis_client.zcard(WINDOW) == 2


async def test_a_chat_is_verified_by_auth_service_when_redis_is_away(
    open_gateway: Opener, downstream: Downstream
) -> None:
    """Fail open (the default): no version can be checked, so no cached verification is used."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    async with open_gateway(redis_port=dead_port) as gateway:
        for _ in range(3):
            assert (await chat(gateway)).status_code == 200
    assert verify_calls(downstream) == 3
