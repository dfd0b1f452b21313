"""Key rotation and revocation, the verified-key cache, and the admin API of the gateway, with
auth and usage replaced at the HTTP edge and real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
import redis.asyncio as redis
from api_gateway.key_versions import KeyVersions, doubt_key, version_key
from api_gateway.main import create_app
from fastapi import FastAPI
from gateway_downstream import (
    ADMIN,
    AS_ADMIN,
    MONTH,
    OTHER_KEY,
    USER,
    USER_ID,
    VALID_KEY,
    Downstream,
    reply,
    settings_for,
)
from pydantic import SecretStr, ValidationError
from recorded_metrics import Recorded

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]
KEY = {"x-api-key": VALID_KEY}


@pytest.fixture
def downstream() -> Downstream:
    downstream = Downstream()
    downstream.override("auth", f"/auth/users/{USER_ID}", reply(200, USER))
    downstream.override(
        "auth", f"/auth/users/{USER_ID}/plan", reply(200, {**USER, "plan": "PRO", "version": 1})
    )
    downstream.override("usage", f"/usage/{USER_ID}/plan", reply(200, MONTH))
    return downstream


@pytest.fixture
async def gateway(
    open_gateway: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
) -> AsyncIterator[httpx.AsyncClient]:
    async with open_gateway() as client:
        yield client


def verify_calls(downstream: Downstream) -> int:
    return downstream.paths("auth").count("/auth/verify")


# -- the verified-key cache in the request path ---------------------------------------------------


async def test_a_verified_key_is_not_verified_again_within_the_cache_ttl(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    for _ in range(3):
        assert (await gateway.get("/test", headers=KEY)).status_code == 200
    assert verify_calls(downstream) == 1


async def test_unknown_keys_are_never_cached(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    for _ in range(2):
        assert (await gateway.get("/test", headers={"x-api-key": OTHER_KEY})).status_code == 401
    assert verify_calls(downstream) == 2


async def test_key_cache_seconds_zero_verifies_every_request(
    open_gateway: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
    downstream: Downstream,
) -> None:
    async with open_gateway(key_cache_seconds=0) as gateway:
        for _ in range(3):
            await gateway.get("/test", headers=KEY)
    assert verify_calls(downstream) == 3


@pytest.mark.parametrize("seconds", [-0.1, 3600.5])
def test_key_cache_seconds_is_bounded(redis_port: int, seconds: float) -> None:
    with pytest.raises(ValidationError):
        settings_for(redis_port, key_cache_seconds=seconds)


async def test_a_change_made_through_another_replica_applies_on_the_next_request(
    open_gateway: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
    downstream: Downstream,
) -> None:
    downstream.override("auth", "/auth/keys/revoke", reply(200, {"userId": USER_ID, "version": 1}))
    async with open_gateway() as first, open_gateway() as second:
        for _ in range(2):
            assert (await second.get("/test", headers=KEY)).status_code == 200
        assert verify_calls(downstream) == 1  # the second replica now trusts its cache
        assert (await first.delete("/v1/keys/current", headers=KEY)).status_code == 200
        downstream.override(
            "auth", "/auth/verify", reply(401, {"message": "Invalid API key", "code": "x"})
        )
        # Redis holds version 1 now: the second replica's cached version 0 is stale at once.
        assert (await second.get("/test", headers=KEY)).status_code == 401
        assert downstream.paths("auth") == [
            "/auth/verify",  # the second replica, cached from then on
            "/auth/verify",  # the first resolves whose key it is before the change
            "/auth/keys/revoke",
            "/auth/verify",  # the second, whose cached verification is stale
        ]


async def test_a_refused_key_stays_refused_when_redis_reverts_to_an_older_version(
    open_gateway: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
    downstream: Downstream,
    redis_client: redis.Redis,
) -> None:
    """The stale verification is forgotten when found stale: Redis restored from an older
    snapshot (version 0 again) cannot bring the revoked key back from the cache."""
    downstream.override("auth", "/auth/keys/revoke", reply(200, {"userId": USER_ID, "version": 1}))
    async with open_gateway() as first, open_gateway() as second:
        assert (await second.get("/test", headers=KEY)).status_code == 200
        assert (await first.delete("/v1/keys/current", headers=KEY)).status_code == 200
        downstream.override(
            "auth", "/auth/verify", reply(401, {"message": "Invalid API key", "code": "x"})
        )
        assert (await second.get("/test", headers=KEY)).status_code == 401
        await redis_client.set(version_key(USER_ID), 0)  # the version from before the change
        assert (await second.get("/test", headers=KEY)).status_code == 401


async def test_a_plan_change_on_another_replica_applies_on_the_next_request(
    open_gateway: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
    downstream: Downstream,
) -> None:
    async with open_gateway() as first, open_gateway() as second:
        assert (await second.get("/test", headers=KEY)).json()["user"]["plan"] == "FREE"
        change = await first.put(
            f"/admin/users/{USER_ID}/plan", json={"plan": "PRO"}, headers=AS_ADMIN
        )
        assert change.status_code == 200
        downstream.override(
            "auth", "/auth/verify", reply(200, {**USER, "valid": True, "plan": "PRO", "version": 1})
        )
        test = await second.get("/test", headers=KEY)
        assert test.json()["user"]["plan"] == "PRO"
        assert test.headers["x-ratelimit-limit-requests"] == "7"


async def test_a_cached_key_is_verified_again_when_redis_lost_the_version(
    gateway: httpx.AsyncClient, downstream: Downstream, redis_client: redis.Redis
) -> None:
    for _ in range(2):
        await gateway.get("/test", headers=KEY)
    assert verify_calls(downstream) == 1
    await redis_client.flushall()  # e.g. Redis restarted without its data
    for _ in range(2):
        assert (await gateway.get("/test", headers=KEY)).status_code == 200
    assert verify_calls(downstream) == 2  # verified once, then trusted again


async def test_a_verification_older_than_the_announced_version_is_not_cached(
    gateway: httpx.AsyncClient, downstream: Downstream, redis_client: redis.Redis
) -> None:
    # A change (version 5) was announced while this replica's verification read version 0.
    assert (
        await KeyVersions(
            redis_client,
            keep_seconds=60,
            errors=Recorded().metrics.redis_errors.labels("key_versions"),
        ).announce(USER_ID, 5)
        == 5
    )
    for _ in range(2):
        assert (await gateway.get("/test", headers=KEY)).status_code == 200
    assert verify_calls(downstream) == 2


async def test_without_redis_every_request_is_verified(
    app_client: AppClient, downstream: Downstream, redis_port: int
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    app = create_app(settings_for(dead_port), transport=downstream.transport())
    async with app_client(app) as gateway:
        for _ in range(3):
            assert (await gateway.get("/test", headers=KEY)).status_code == 200
    assert verify_calls(downstream) == 3


def key_versions(client: redis.Redis) -> KeyVersions:
    return KeyVersions(
        client, keep_seconds=60, errors=Recorded().metrics.redis_errors.labels("key_versions")
    )


async def test_announced_versions_only_go_up(redis_client: redis.Redis) -> None:
    versions = KeyVersions(
        redis_client, keep_seconds=60, errors=Recorded().metrics.redis_errors.labels("key_versions")
    )
    assert not await versions.is_current(USER_ID, 0, VALID_KEY)  # nothing known: verify
    assert await versions.announce(USER_ID, 3) == 3
    assert await versions.announce(USER_ID, 2) == 3  # a late, older announcement
    current = [await versions.is_current(USER_ID, v, VALID_KEY) for v in (2, 3)]
    assert current == [False, True]
    assert 0 < await redis_client.ttl(version_key(USER_ID)) <= 60
    assert version_key(USER_ID) == "keyver:{" + USER_ID + "}"  # hashed by the user id alone


async def test_a_key_in_doubt_is_not_trusted_from_any_cache_until_the_mark_expires(
    redis_client: redis.Redis,
) -> None:
    versions = KeyVersions(
        redis_client, keep_seconds=60, errors=Recorded().metrics.redis_errors.labels("key_versions")
    )
    await versions.announce(USER_ID, 3)
    await versions.doubt(USER_ID, VALID_KEY, seconds=0.3)
    assert not await versions.is_current(USER_ID, 3, VALID_KEY)
    assert await versions.is_current(USER_ID, 3, "sk_other_key")  # only that key
    assert await redis_client.keys("keydoubt:*") == [doubt_key(USER_ID, VALID_KEY).encode()]
    assert doubt_key(USER_ID, VALID_KEY).startswith("keydoubt:{" + USER_ID + "}:")  # user's slot
    stored = repr(await redis_client.keys("*"))
    assert VALID_KEY not in stored
    assert hashlib.sha256(VALID_KEY.encode()).hexdigest() not in stored  # auth's lookup hash
    await asyncio.sleep(0.4)
    assert await versions.is_current(USER_ID, 3, VALID_KEY)


@pytest.mark.parametrize(
    ("method", "path", "auth_path"),
    [
        ("POST", "/v1/keys/rotate", "/auth/keys/rotate"),
        ("DELETE", "/v1/keys/current", "/auth/keys/revoke"),
    ],
)
@pytest.mark.parametrize("status", [503, 504])
async def test_a_change_with_an_unknown_outcome_stops_every_replica_trusting_its_cache(
    open_gateway: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
    downstream: Downstream,
    method: str,
    path: str,
    auth_path: str,
    status: int,
) -> None:
    # auth-service may have made the change and then failed to answer: no version to announce.
    downstream.override("auth", auth_path, reply(status, {"message": "x", "code": "x"}))
    async with open_gateway() as first, open_gateway() as second:
        for _ in range(2):
            assert (await second.get("/test", headers=KEY)).status_code == 200
        assert verify_calls(downstream) == 1
        assert (await first.request(method, path, headers=KEY)).status_code == status
        downstream.override(
            "auth", "/auth/verify", reply(401, {"message": "Invalid API key", "code": "x"})
        )
        assert (await second.get("/test", headers=KEY)).status_code == 401
        # The second replica's, the first's (whose key it is, for the mark), the second's again.
        assert verify_calls(downstream) == 3


@pytest.mark.parametrize(
    ("method", "path", "auth_path"),
    [
        ("POST", "/v1/keys/rotate", "/auth/keys/rotate"),
        ("DELETE", "/v1/keys/current", "/auth/keys/revoke"),
    ],
)
async def test_a_key_in_doubt_is_marked_in_its_users_slot(
    gateway: httpx.AsyncClient,
    downstream: Downstream,
    redis_client: redis.Redis,
    method: str,
    path: str,
    auth_path: str,
) -> None:
    await gateway.get("/test", headers=KEY)  # cached: the change needs no verification first
    downstream.override("auth", auth_path, reply(504, {"message": "x", "code": "x"}))
    assert (await gateway.request(method, path, headers=KEY)).status_code == 504
    assert downstream.paths("auth") == ["/auth/verify", auth_path]
    assert await redis_client.keys("keydoubt:*") == [doubt_key(USER_ID, VALID_KEY).encode()]


async def test_a_change_of_a_key_that_no_longer_verifies_still_reaches_auth_service(
    gateway: httpx.AsyncClient, downstream: Downstream, redis_client: redis.Redis
) -> None:
    """A retried rotation that already succeeded: the old key no longer verifies, so its user
    is unknown; auth-service decides (the same new key again), and an unknown outcome then
    leaves no mark (the changes feed reaches every replica instead)."""
    downstream.override(
        "auth", "/auth/verify", reply(401, {"message": "Invalid API key", "code": "x"})
    )
    rotated = {"message": "x", "userId": USER_ID, "apiKey": "sk_fresh", "plan": "FREE"}
    downstream.override("auth", "/auth/keys/rotate", reply(200, {**rotated, "version": 2}))
    again = await gateway.post("/v1/keys/rotate", headers={**KEY, "idempotency-key": "k-1"})
    assert (again.status_code, again.json()["apiKey"]) == (200, "sk_fresh")
    downstream.override("auth", "/auth/keys/revoke", reply(503, {"message": "x", "code": "x"}))
    assert (await gateway.delete("/v1/keys/current", headers=KEY)).status_code == 503
    assert downstream.paths("auth") == [
        "/auth/verify",
        "/auth/keys/rotate",
        "/auth/verify",
        "/auth/keys/revoke",
    ]
    assert await redis_client.keys("keydoubt:*") == []


@pytest.mark.parametrize("status", [503, 504])
async def test_no_change_is_asked_for_while_auth_service_cannot_verify_the_key(
    gateway: httpx.AsyncClient, downstream: Downstream, redis_client: redis.Redis, status: int
) -> None:
    downstream.override("auth", "/auth/verify", reply(status, {"message": "x", "code": "x"}))
    assert (await gateway.post("/v1/keys/rotate", headers=KEY)).status_code == status
    assert (await gateway.delete("/v1/keys/current", headers=KEY)).status_code == status
    assert downstream.paths("auth") == ["/auth/verify", "/auth/verify"]
    assert await redis_client.keys("keydoubt:*") == []  # nothing changed: nothing in doubt


async def test_verifications_of_a_key_in_doubt_are_not_cached(
    gateway: httpx.AsyncClient, downstream: Downstream, redis_client: redis.Redis
) -> None:
    # A change of unknown outcome may still land in auth-service after a verification read.
    await KeyVersions(
        redis_client, keep_seconds=60, errors=Recorded().metrics.redis_errors.labels("key_versions")
    ).doubt(USER_ID, VALID_KEY, seconds=30)
    for _ in range(2):
        assert (await gateway.get("/test", headers=KEY)).status_code == 200
    assert verify_calls(downstream) == 2


async def test_a_refused_change_leaves_the_caches_alone(
    open_gateway: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
    downstream: Downstream,
) -> None:
    downstream.override("auth", "/auth/keys/revoke", reply(401, {"message": "x", "code": "x"}))
    async with open_gateway() as first, open_gateway() as second:
        await second.get("/test", headers=KEY)
        assert (await first.delete("/v1/keys/current", headers=KEY)).status_code == 401
        assert (await second.get("/test", headers=KEY)).status_code == 200
        # The second's, then the first's before the change; nothing changed: the second replica
        # keeps trusting its cache.
        assert verify_calls(downstream) == 2


# -- rotate and revoke --------------------------------------------------------------------------


async def test_rotate_returns_the_new_key_once_and_drops_the_old_one_from_the_cache(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    await gateway.get("/test", headers=KEY)  # cached
    downstream.override(
        "auth",
        "/auth/keys/rotate",
        reply(
            200,
            {"message": "x", "userId": USER_ID, "apiKey": "sk_fresh", "plan": "FREE", "version": 1},
        ),
    )
    response = await gateway.post("/v1/keys/rotate", headers=KEY)
    assert response.status_code == 200
    assert response.json() == {"message": "API key rotated", "apiKey": "sk_fresh", "plan": "FREE"}
    assert downstream.bodies("auth", "/auth/keys/rotate") == [{"apiKey": VALID_KEY}]
    # auth-service now refuses the old key: this replica asks again instead of trusting its cache.
    downstream.override(
        "auth",
        "/auth/verify",
        reply(401, {"message": "Invalid API key", "code": "invalid_api_key"}),
    )
    assert (await gateway.get("/test", headers=KEY)).status_code == 401


async def test_revoke_accepts_a_bearer_key_and_the_key_is_refused_at_once(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    bearer = {"authorization": f"Bearer {VALID_KEY}"}
    assert (await gateway.get("/test", headers=bearer)).status_code == 200
    downstream.override(
        "auth", "/auth/keys/revoke", reply(200, {"message": "x", "userId": USER_ID, "version": 1})
    )
    response = await gateway.delete("/v1/keys/current", headers=bearer)
    assert response.status_code == 200
    assert response.json() == {"message": "API key revoked"}
    assert downstream.bodies("auth", "/auth/keys/revoke") == [{"apiKey": VALID_KEY}]
    downstream.override(
        "auth",
        "/auth/verify",
        reply(401, {"message": "Invalid API key", "code": "invalid_api_key"}),
    )
    assert (await gateway.get("/test", headers=bearer)).status_code == 401


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/keys/rotate"), ("DELETE", "/v1/keys/current")]
)
async def test_key_routes_need_a_key_and_pass_on_auths_refusal(
    gateway: httpx.AsyncClient, downstream: Downstream, method: str, path: str
) -> None:
    missing = await gateway.request(method, path)
    assert (missing.status_code, missing.json()["code"]) == (401, "api_key_missing")
    assert downstream.calls == []
    refuse = reply(401, {"message": "Invalid API key", "code": "invalid_api_key"})
    downstream.override("auth", "/auth/keys/rotate", refuse)
    downstream.override("auth", "/auth/keys/revoke", refuse)
    refused = await gateway.request(method, path, headers={"x-api-key": "sk_old"})
    assert (refused.status_code, refused.json()["message"]) == (401, "Invalid API key")


async def test_key_routes_answer_503_when_auth_is_down(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    downstream.override(
        "auth", "/auth/keys/rotate", reply(503, {"message": "Database unavailable"})
    )
    assert (await gateway.post("/v1/keys/rotate", headers=KEY)).status_code == 503


# -- the admin API ------------------------------------------------------------------------------


async def test_the_admin_api_does_not_exist_without_an_admin_token(
    open_gateway: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
) -> None:
    async with open_gateway(admin_token=SecretStr("")) as gateway:
        response = await gateway.get(f"/admin/users/{USER_ID}", headers=AS_ADMIN)
        assert response.status_code == 404
        put = await gateway.put(f"/admin/users/{USER_ID}/plan", json={"plan": "PRO"})
        assert put.status_code == 404
        schema = (await gateway.get("/openapi.json")).json()
    assert not [path for path in schema["paths"] if path.startswith("/admin")]


def test_a_short_admin_token_is_refused_at_startup(redis_port: int) -> None:
    with pytest.raises(ValidationError):
        settings_for(redis_port, admin_token=SecretStr("short"))


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-admin-token-0123456789"},
        {"x-admin-token": ADMIN[:-1]},
        {"authorization": f"Basic {ADMIN}"},
        {"x-api-key": VALID_KEY},
    ],
)
async def test_admin_routes_refuse_a_missing_or_wrong_token_with_401(
    gateway: httpx.AsyncClient, downstream: Downstream, headers: dict[str, str]
) -> None:
    response = await gateway.put(
        f"/admin/users/{USER_ID}/plan", json={"plan": "PRO"}, headers=headers
    )
    assert response.status_code == 401
    assert response.json()["code"] == "admin_auth_failed"
    assert downstream.calls == []


@pytest.mark.parametrize("headers", [AS_ADMIN, {"x-admin-token": ADMIN}])
async def test_admin_reads_a_user_with_either_header(
    gateway: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await gateway.get(f"/admin/users/{USER_ID}", headers=headers)
    assert response.status_code == 200
    assert response.json()["email"] == "ada@example.com"


async def test_set_plan_updates_auth_then_usage_and_forgets_cached_keys(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    await gateway.get("/test", headers=KEY)  # FREE, cached
    response = await gateway.put(
        f"/admin/users/{USER_ID}/plan", json={"plan": "PRO"}, headers=AS_ADMIN
    )
    assert response.status_code == 200
    assert response.json() == {
        "message": "Plan updated",
        "userId": USER_ID,
        "plan": "PRO",
        "monthlyLimit": 50000,
        "remainingTokens": 48500,
        "requestsPerWindow": 7,
        "windowSeconds": 60,
    }
    order = [(c.service, c.path) for c in downstream.calls if "/plan" in c.path]
    assert order == [("auth", f"/auth/users/{USER_ID}/plan"), ("usage", f"/usage/{USER_ID}/plan")]
    assert downstream.bodies("usage", f"/usage/{USER_ID}/plan") == [{"plan": "PRO"}]
    downstream.override(
        "auth",
        "/auth/verify",
        reply(200, {"valid": True, "userId": USER_ID, "plan": "PRO", "version": 1}),
    )
    test = await gateway.get("/test", headers=KEY)
    assert test.json()["user"]["plan"] == "PRO"
    assert test.headers["x-ratelimit-limit-requests"] == "7"


async def test_admin_usage_reports_this_months_figures_for_the_users_plan(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    seen: list[httpx.URL] = []

    def month(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json=MONTH)

    downstream.override("usage", f"/usage/{USER_ID}", month)
    response = await gateway.get(f"/admin/users/{USER_ID}/usage", headers=AS_ADMIN)
    assert response.status_code == 200
    assert response.json() == {
        "userId": USER_ID,
        "plan": "FREE",
        "period": "2026-11",
        "usedTokens": 1200,
        "reservedTokens": 300,
        "monthlyLimit": 50000,
        "remainingTokens": 48500,
        "percentageUsed": 2.4,
    }
    assert seen[0].params["plan"] == "FREE"  # a user with no usage yet gets their plan's quota


async def test_admin_request_history_passes_the_page_through(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    seen: list[httpx.URL] = []
    page = {
        "data": [
            {
                "requestId": "r-1",
                "model": "llama3",
                "status": "SUCCESS",
                "promptTokens": 9,
                "completionTokens": 3,
                "tokensUsed": 12,
                "responseTimeMs": 40.5,
                "createdAt": "2026-11-02T03:04:05.123Z",
            }
        ],
        "nextCursor": "MTIzOmFiYw",
    }

    def history(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json=page)

    downstream.override("usage", f"/usage/{USER_ID}/requests", history)
    response = await gateway.get(
        f"/admin/users/{USER_ID}/requests",
        params={"limit": 1, "before": "MTIzOmFiYw"},
        headers=AS_ADMIN,
    )
    assert response.status_code == 200
    assert response.json()["nextCursor"] == "MTIzOmFiYw"
    assert response.json()["data"][0]["tokensUsed"] == 12
    assert "prompt" not in json.dumps(response.json()).replace("promptTokens", "")
    assert (seen[0].params["limit"], seen[0].params["before"]) == ("1", "MTIzOmFiYw")


async def test_admin_routes_answer_404_for_an_unknown_user(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    other = "0" * 24
    downstream.override(
        "auth",
        f"/auth/users/{other}",
        reply(404, {"message": "User not found", "code": "user_not_found"}),
    )
    for path in (f"/admin/users/{other}/usage", f"/admin/users/{other}/requests"):
        response = await gateway.get(path, headers=AS_ADMIN)
        assert (response.status_code, response.json()["code"]) == (404, "user_not_found")
    assert "usage" not in {c.service for c in downstream.calls}


async def test_admin_finds_users_by_normalised_email(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    seen: list[httpx.URL] = []

    def users(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"data": [USER]})

    downstream.override("auth", "/auth/users", users)
    response = await gateway.get(
        "/admin/users", params={"email": " Ada@Example.COM"}, headers=AS_ADMIN
    )
    assert response.status_code == 200
    # Everything but the version, which is the gateways' business.
    assert response.json() == {"data": [{k: v for k, v in USER.items() if k != "version"}]}
    assert seen[0].params["email"] == "ada@example.com"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/users/not-a-user-id/usage", None),
        ("GET", "/admin/users/" + "g" * 24, None),
        ("GET", "/admin/users/" + "a" * 25 + "/requests", None),
        ("PUT", f"/admin/users/{USER_ID}/plan", {"plan": "GOLD"}),
        ("PUT", f"/admin/users/{USER_ID}/plan", {"plan": "pro"}),
        ("PUT", f"/admin/users/{USER_ID}/plan", {"plan": "PRO", "limit": 10**9}),
        ("PUT", f"/admin/users/{USER_ID}/plan", {}),
        ("GET", f"/admin/users/{USER_ID}/requests?limit=0", None),
        ("GET", f"/admin/users/{USER_ID}/requests?limit=501", None),
        ("GET", f"/admin/users/{USER_ID}/requests?before=%24where", None),
        ("GET", "/admin/users", None),
        ("GET", "/admin/users?email=not-an-email", None),
    ],
)
async def test_admin_routes_validate_their_input_with_400(
    gateway: httpx.AsyncClient, downstream: Downstream, method: str, path: str, body: object
) -> None:
    response = await gateway.request(method, path, json=body, headers=AS_ADMIN)
    assert response.status_code == 400, response.text
    assert downstream.calls == []


async def test_the_admin_api_stays_out_of_the_public_openapi_document(
    gateway: httpx.AsyncClient,
) -> None:
    paths = (await gateway.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith("/admin")]
    assert {"/v1/keys/rotate", "/v1/keys/current"} <= set(paths)
    users = await gateway.get(f"/admin/users/{USER_ID}", headers=AS_ADMIN)
    assert users.status_code == 200  # the routes themselves work
