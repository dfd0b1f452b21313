"""What one caller must not be able to do to everyone, and a key lifecycle that never locks a user
out, at the gateway: auth and usage replaced at the HTTP edge, ai too, and a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from fastapi import FastAPI
from gateway_downstream import (
    AS_ADMIN,
    MONTH,
    OTHER_KEY,
    USER,
    USER_ID,
    VALID_KEY,
    Downstream,
    reply,
)
from infergate_devstack.ports import free_ports

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]
KEY = {"x-api-key": VALID_KEY}
Opener = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
async def gateway(open_gateway: Opener) -> AsyncIterator[httpx.AsyncClient]:
    async with open_gateway(auth_failure_rate_limit=5) as client:
        yield client


def auth_calls(downstream: Downstream) -> list[str]:
    return downstream.paths("auth")


# -- keys that cannot be keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    "presented",
    [
        "sk_nope",  # too short
        VALID_KEY + "A",  # too long by one
        VALID_KEY + "\xa0",  # a trailing no-break space: not another spelling of the key
        VALID_KEY[:20] + "\t" + VALID_KEY[20:],
        "sk_" + "!" * 43,  # not URL-safe base64
        "sk_" + "A" * 5000,  # far over any length limit: 401, not 400
    ],
)
async def test_a_malformed_key_is_401_without_asking_auth_service(
    gateway: httpx.AsyncClient, downstream: Downstream, presented: str
) -> None:
    header = f"Bearer {presented}".encode("latin-1")  # as sent on the wire, byte for byte
    response = await gateway.get("/test", headers={b"authorization": header})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"
    assert auth_calls(downstream) == []


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/keys/rotate"), ("DELETE", "/v1/keys/current")]
)
async def test_rotate_and_revoke_refuse_a_malformed_key_before_any_change(
    gateway: httpx.AsyncClient,
    downstream: Downstream,
    redis_client: redis.Redis,
    method: str,
    path: str,
) -> None:
    response = await gateway.request(method, path, headers={"x-api-key": "garbage"})
    assert response.status_code == 401
    assert auth_calls(downstream) == []
    assert await redis_client.keys("keydoubt:*") == []  # no mark written for garbage


async def test_a_network_that_keeps_failing_gets_429_before_auth_service_is_asked(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    here = {"x-real-ip": "203.0.113.7"}
    for _ in range(5):  # AUTH_FAILURE_RATE_LIMIT is 5 here
        response = await gateway.get("/test", headers={"x-api-key": OTHER_KEY, **here})
        assert response.status_code == 401
    assert auth_calls(downstream).count("/auth/verify") == 5
    refused = await gateway.get("/test", headers={"x-api-key": OTHER_KEY, **here})
    assert refused.status_code == 429
    assert refused.json()["code"] == "auth_rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    assert auth_calls(downstream).count("/auth/verify") == 5  # not asked again
    garbage = await gateway.get("/test", headers={"x-api-key": "sk_bad", **here})
    assert garbage.status_code == 429
    elsewhere = await gateway.get("/test", headers={**KEY, "x-real-ip": "198.51.100.9"})
    assert elsewhere.status_code == 200  # another network is not affected


async def test_registrations_from_one_ipv6_64_share_one_limit(
    open_gateway: Opener, downstream: Downstream
) -> None:
    async with open_gateway(registration_rate_limit=2) as gateway:
        statuses = []
        for host in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:2::abcd"):
            response = await gateway.post(
                "/v1/register", json={"email": "a@example.com"}, headers={"x-real-ip": host}
            )
            statuses.append(response.status_code)
        other = await gateway.post(
            "/v1/register",
            json={"email": "a@example.com"},
            headers={"x-real-ip": "2001:db8:1:3::1"},
        )
    assert statuses == [201, 201, 429]
    assert other.status_code == 201  # another /64


# -- idempotent key issuance --------------------------------------------------------------------


async def test_register_and_rotate_pass_the_idempotency_key_to_auth_service(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    again = {"idempotency-key": "6f1c7c1e-2b1d-4c59-9f8e-0a1b2c3d4e5f"}
    downstream.override(
        "auth",
        "/auth/keys/rotate",
        reply(200, {"userId": USER_ID, "apiKey": OTHER_KEY, "plan": "FREE", "version": 1}),
    )
    await gateway.post("/v1/register", json={"email": "b@example.com"}, headers=again)
    await gateway.post("/v1/keys/rotate", headers={**KEY, **again})
    bodies = downstream.bodies("auth", "/auth/register") + downstream.bodies(
        "auth", "/auth/keys/rotate"
    )
    assert [body["idempotencyKey"] for body in bodies] == [again["idempotency-key"]] * 2


async def test_an_unprintable_idempotency_key_is_400(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post(
        "/v1/register", json={"email": "c@example.com"}, headers={"idempotency-key": "a b"}
    )
    assert response.status_code == 400


# -- every change reaches every replica, even unannounced ---------------------------------------


async def test_a_change_nobody_announced_reaches_a_replica_through_auth_services_stamps(
    open_gateway: Opener, downstream: Downstream, redis_client: redis.Redis
) -> None:
    """The gateway that revoked the key died before announcing it (or Redis lost the version):
    this replica still drops its cached verification, from auth-service's own record."""
    async with open_gateway(key_changes_seconds=0.05) as gateway:
        assert (await gateway.get("/test", headers=KEY)).status_code == 200
        downstream.override(
            "auth",
            "/auth/changes",
            reply(200, {"changes": [{"userId": USER_ID, "version": 1}], "until": 0}),
        )
        downstream.override(
            "auth",
            "/auth/verify",
            reply(401, {"message": "Invalid API key", "code": "invalid_api_key"}),
        )
        await redis_client.flushall()  # no announcement anywhere
        for _ in range(100):  # until the replica has read the stamps (every 50 ms here)
            if (await gateway.get("/test", headers=KEY)).status_code == 401:
                break
            await asyncio.sleep(0.05)
        assert (await gateway.get("/test", headers=KEY)).status_code == 401


async def test_a_plan_change_is_announced_even_when_usage_service_fails(
    open_gateway: Opener, downstream: Downstream
) -> None:
    downstream.override(
        "auth", f"/auth/users/{USER_ID}/plan", reply(200, {**USER, "plan": "PRO", "version": 1})
    )
    downstream.override(
        "usage", f"/usage/{USER_ID}/plan", reply(503, {"message": "down", "code": "x"})
    )
    async with open_gateway() as first, open_gateway() as second:
        assert (await second.get("/test", headers=KEY)).json()["user"]["plan"] == "FREE"
        change = await first.put(
            f"/admin/users/{USER_ID}/plan", json={"plan": "PRO"}, headers=AS_ADMIN
        )
        assert change.status_code == 503  # repeat it: the quota moves once
        downstream.override(
            "auth", "/auth/verify", reply(200, {**USER, "valid": True, "plan": "PRO", "version": 1})
        )
        assert (await second.get("/test", headers=KEY)).json()["user"]["plan"] == "PRO"


async def test_an_operator_can_issue_a_new_key_after_a_revocation(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    downstream.override(
        "auth",
        f"/auth/users/{USER_ID}/key",
        reply(200, {"userId": USER_ID, "apiKey": OTHER_KEY, "plan": "FREE", "version": 3}),
    )
    issued = await gateway.post(f"/admin/users/{USER_ID}/key", headers=AS_ADMIN)
    assert issued.status_code == 200
    assert issued.json() == {
        "message": "API key issued",
        "userId": USER_ID,
        "apiKey": OTHER_KEY,
        "plan": "FREE",
    }


# -- one user's model, everyone's gateway -------------------------------------------------------


async def test_a_failing_model_opens_only_its_own_circuit(
    open_gateway: Opener, downstream: Downstream
) -> None:
    def by_model(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["model"] == "broken":
            return httpx.Response(503, json={"message": "LLM error", "code": "llm_error"})
        return httpx.Response(200, json=downstream.generation)

    downstream.override("ai", "/ai/generate", by_model)
    async with open_gateway(
        models="llama3,broken", circuit_failure_threshold=2, free_rate_limit=100
    ) as gateway:
        broken = [await chat(gateway, model="broken") for _ in range(3)]
        healthy = await chat(gateway, model="llama3")
    assert [r.status_code for r in broken] == [503, 503, 503]
    assert broken[-1].json()["code"] == "circuit_open"
    assert healthy.status_code == 200


async def test_a_model_the_llm_server_lacks_is_404_and_never_opens_the_circuit(
    open_gateway: Opener, downstream: Downstream
) -> None:
    missing = reply(404, {"message": "Model 'llama3' is not available", "code": "model_not_found"})
    downstream.override("ai", "/ai/generate", missing)
    async with open_gateway(circuit_failure_threshold=2, free_rate_limit=100) as gateway:
        answers = [await chat(gateway) for _ in range(4)]
        downstream.overrides.pop(("ai", "/ai/generate"))
        after = await chat(gateway)
    assert {r.status_code for r in answers} == {404}
    assert {r.json()["code"] for r in answers} == {"model_not_found"}
    assert after.status_code == 200


async def chat(gateway: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await gateway.post("/v1/chat", json={"prompt": "hi", **body}, headers=KEY)


# -- readiness and what needs no limiter --------------------------------------------------------


async def test_public_readiness_names_nothing_and_is_checked_at_most_every_two_seconds(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    downstream.override("ai", "/readyz", reply(503, {"status": "unavailable"}))
    answers = [await gateway.get("/readyz/public") for _ in range(5)]
    detailed = await gateway.get("/readyz")
    assert {a.status_code for a in answers} == {503}
    assert answers[0].json() == {"status": "unavailable", "checks": {}}
    assert detailed.json()["checks"]["ai"] == "down"
    assert downstream.paths("ai").count("/readyz") == 1  # six answers, one check


async def test_usage_and_models_answer_without_redis_even_in_closed_mode(
    open_gateway: Opener, downstream: Downstream
) -> None:
    downstream.override("usage", f"/usage/{USER_ID}", reply(200, MONTH))
    downstream.override("ai", "/ai/models", reply(200, {"models": ["llama3"]}))
    (dead,) = free_ports(1)
    async with open_gateway(redis_port=dead, rate_limit_failure_mode="closed") as gateway:
        usage = await gateway.get("/v1/usage", headers=KEY)
        models = await gateway.get("/v1/models", headers=KEY)
        chat_refused = await chat(gateway)
    assert (usage.status_code, models.status_code) == (200, 200)
    assert usage.json()["remainingTokens"] == 50000 - 1200 - 300  # limit - used - reserved
    assert chat_refused.status_code == 503  # the limited route still fails closed
