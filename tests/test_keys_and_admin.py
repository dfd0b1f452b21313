"""Key rotation and revocation across gateway replicas, and the admin API, on running stacks.

Keys are used through nginx like a user would; the cross-replica tests call the two gateway
replicas directly (with nginx's X-Real-IP), since nginx would spread the calls between them. The
admin API is only reachable on a gateway directly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from infergate_devstack.nginx import UNLIMITED_EDGE
from infergate_devstack.stack import Stack

from tests.fake_ollama_fixtures import FakeOllamaControl, FakeOllamaProcess
from tests.helpers import ADMIN_TOKEN, chat, local_stack, register

AS_ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
# Long on purpose: a change must reach the other replica at once, not when its cache expires.
KEY_CACHE_SECONDS = 60.0


@pytest.fixture(scope="module")
def replicated_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllamaProcess
) -> Iterator[Stack]:
    env = {
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "KEY_CACHE_SECONDS": str(KEY_CACHE_SECONDS),
        "FREE_RATE_LIMIT": "3",
        "PRO_RATE_LIMIT": "50",
        "RATE_LIMIT_WINDOW": "60",
        "REGISTRATION_RATE_LIMIT": "10000",
        # Revoked keys keep being tried from one address here: not an attack to refuse.
        "AUTH_FAILURE_RATE_LIMIT": "100000",
        "FREE_MONTHLY_TOKENS": "1000",
        "PRO_MONTHLY_TOKENS": "50000",
        "MAX_OUTPUT_TOKENS": "100",
        "PROMPT_TOKEN_OVERHEAD": "16",
    }
    data_dir = tmp_path_factory.mktemp("replicas")
    env = {**UNLIMITED_EDGE, **env}
    with local_stack(data_dir, fake_ollama.url, env, gateway_replicas=2) as stack:
        yield stack


def _client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=30.0, headers={"x-real-ip": "127.0.0.1"})


@pytest.fixture
async def public(replicated_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(replicated_stack.public_url) as client:
        yield client


@pytest.fixture
async def replicas(replicated_stack: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    """The two gateway replicas, called directly."""
    async with (
        _client(replicated_stack.service_url("gateway")) as first,
        _client(replicated_stack.service_url("gateway-1")) as second,
    ):
        yield first, second


async def usage_status(client: httpx.AsyncClient, key: str) -> int:
    """/v1/usage authenticates the key without counting against the rate limit."""
    return (await client.get("/v1/usage", headers={"x-api-key": key})).status_code


async def user_id_of(gateway: httpx.AsyncClient, email: str) -> str:
    response = await gateway.get("/admin/users", params={"email": email}, headers=AS_ADMIN)
    assert response.status_code == 200, response.text
    [user] = response.json()["data"]
    return str(user["userId"])


async def register_email(client: httpx.AsyncClient) -> tuple[str, str]:
    email = f"keys-{uuid.uuid4().hex}@example.com"
    response = await client.post("/v1/register", json={"email": email})
    assert response.status_code == 201, response.text
    return email, str(response.json()["apiKey"])


# -- keys ---------------------------------------------------------------------------------------


async def test_rotate_returns_a_working_new_key_and_the_old_one_stops_working(
    public: httpx.AsyncClient,
) -> None:
    old = await register(public)
    response = await public.post("/v1/keys/rotate", headers={"authorization": f"Bearer {old}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["message"], body["plan"]) == ("API key rotated", "FREE")
    new = body["apiKey"]
    assert new.startswith("sk_")
    assert new != old
    assert await usage_status(public, new) == 200
    assert await usage_status(public, old) == 401
    again = await public.post("/v1/keys/rotate", headers={"x-api-key": old})
    assert again.status_code == 401


async def test_the_replica_that_rotates_refuses_the_old_key_at_once(
    public: httpx.AsyncClient, replicas: tuple[httpx.AsyncClient, ...]
) -> None:
    first, _ = replicas
    old = await register(public)
    assert await usage_status(first, old) == 200  # now in this replica's key cache
    rotated = await first.post("/v1/keys/rotate", headers={"x-api-key": old})
    assert rotated.status_code == 200
    assert await usage_status(first, old) == 401
    assert await usage_status(first, rotated.json()["apiKey"]) == 200


async def test_revoke_answers_once_and_the_key_is_refused_afterwards(
    public: httpx.AsyncClient,
) -> None:
    key = await register(public)
    response = await public.delete("/v1/keys/current", headers={"x-api-key": key})
    assert response.status_code == 200
    assert response.json() == {"message": "API key revoked"}
    assert await usage_status(public, key) == 401
    assert (await chat(public, key)).status_code == 401
    assert (await public.delete("/v1/keys/current", headers={"x-api-key": key})).status_code == 401


async def test_a_key_revoked_through_one_replica_is_refused_by_the_other_at_once(
    public: httpx.AsyncClient, replicas: tuple[httpx.AsyncClient, ...]
) -> None:
    first, second = replicas
    key = await register(public)
    for _ in range(3):
        assert await usage_status(second, key) == 200  # cached by the other replica
    assert (await first.delete("/v1/keys/current", headers={"x-api-key": key})).status_code == 200
    # The very next request on either replica, and every one after it.
    assert [await usage_status(gateway, key) for gateway in (second, first, second)] == [401] * 3


async def test_no_request_started_after_a_revocation_succeeds_under_load(
    public: httpx.AsyncClient, replicas: tuple[httpx.AsyncClient, ...]
) -> None:
    key = await register(public)
    stop = asyncio.Event()
    revoked_at: float | None = None
    results: list[tuple[float, int]] = []  # (start, status)

    async def worker(index: int) -> None:
        gateway = replicas[index % 2]
        while not stop.is_set():
            started = time.monotonic()
            results.append((started, await usage_status(gateway, key)))

    workers = [asyncio.create_task(worker(i)) for i in range(16)]
    try:
        await asyncio.sleep(0.5)
        revoke = await replicas[0].delete("/v1/keys/current", headers={"x-api-key": key})
        assert revoke.status_code == 200
        revoked_at = time.monotonic()  # the revocation was answered: it is done
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert revoked_at is not None
    assert {status for _, status in results} <= {200, 401}
    assert any(status == 200 for started, status in results if started < revoked_at)
    late = [status for started, status in results if started > revoked_at]
    assert len(late) > 20
    assert set(late) == {401}


async def wait_refused(gateway: httpx.AsyncClient, key: str, *, timeout_s: float) -> float:
    """Seconds until the gateway refuses the key (fails after `timeout_s`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await usage_status(gateway, key) == 401:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"the key was still accepted after {timeout_s} s")


async def test_a_revocation_no_gateway_announced_still_reaches_every_replica(
    replicated_stack: Stack, public: httpx.AsyncClient, replicas: tuple[httpx.AsyncClient, ...]
) -> None:
    """The gateway that made the change died before announcing it: auth-service's own record of
    the change reaches both replicas, long before their caches (KEY_CACHE_SECONDS) expire."""
    key = await register(public)
    for gateway in replicas:
        assert await usage_status(gateway, key) == 200  # cached on both
    internal = {"x-internal-token": replicated_stack.internal_token}
    async with httpx.AsyncClient(base_url=replicated_stack.service_url("auth")) as auth:
        revoked = await auth.post("/auth/keys/revoke", json={"apiKey": key}, headers=internal)
    assert revoked.status_code == 200  # changed in auth-service, announced by nobody
    for gateway in replicas:
        took = await wait_refused(gateway, key, timeout_s=KEY_CACHE_SECONDS / 4)
        print(f"unannounced revocation refused after {took:.2f} s")


async def test_redis_coming_back_with_an_older_version_does_not_revive_a_revoked_key(
    replicated_stack: Stack, public: httpx.AsyncClient, replicas: tuple[httpx.AsyncClient, ...]
) -> None:
    """Redis loses the revocation's version (an older snapshot), again and again: the other
    replica, which had the key cached, refuses it once it has read auth-service's record of the
    change (each KEY_CHANGES_SECONDS), and never accepts it again."""
    first, second = replicas
    key = await register(public)
    user = (await second.get("/test", headers={"x-api-key": key})).json()["user"]["userId"]
    assert (await first.delete("/v1/keys/current", headers={"x-api-key": key})).status_code == 200
    store = redis.Redis.from_url(replicated_stack.redis_url)
    statuses = []
    try:
        for _ in range(40):  # 4 s: several of the replica's reads of auth-service's changes
            await store.set(f"keyver:{{{user}}}", 0)  # the version from before the change
            statuses.append(await usage_status(second, key))
            await asyncio.sleep(0.1)
    finally:
        await store.aclose()
    refused_from = statuses.index(401)
    assert refused_from <= 15  # within about one read of the changes (1 s here)
    assert set(statuses[refused_from:]) == {401}


async def test_a_repeated_registration_with_one_idempotency_key_gets_the_same_key(
    public: httpx.AsyncClient,
) -> None:
    body = {"email": f"idem-{uuid.uuid4().hex}@example.com"}
    again = {"idempotency-key": uuid.uuid4().hex}
    first = await public.post("/v1/register", json=body, headers=again)
    repeat = await public.post("/v1/register", json=body, headers=again)
    assert (first.status_code, repeat.status_code) == (201, 201)
    assert first.json()["apiKey"] == repeat.json()["apiKey"]
    assert (await public.post("/v1/register", json=body)).status_code == 409
    assert await usage_status(public, first.json()["apiKey"]) == 200


async def test_an_operator_gives_a_revoked_user_a_new_key_that_every_replica_accepts(
    public: httpx.AsyncClient, replicas: tuple[httpx.AsyncClient, ...]
) -> None:
    first, second = replicas
    email, key = await register_email(public)
    assert (await first.delete("/v1/keys/current", headers={"x-api-key": key})).status_code == 200
    user_id = await user_id_of(first, email)
    issued = await first.post(f"/admin/users/{user_id}/key", headers=AS_ADMIN)
    assert issued.status_code == 200, issued.text
    new = issued.json()["apiKey"]
    for gateway in replicas:
        assert await usage_status(gateway, new) == 200
        assert await usage_status(gateway, key) == 401


# -- plans --------------------------------------------------------------------------------------


async def test_a_pro_upgrade_raises_the_monthly_limit_and_the_rate_limit_at_once(
    public: httpx.AsyncClient,
    replicas: tuple[httpx.AsyncClient, ...],
    fake_ollama_control: FakeOllamaControl,
) -> None:
    await fake_ollama_control.configure(prompt_tokens=7, completion_tokens=5)
    gateway, other = replicas
    email, key = await register_email(public)
    headers = {"x-api-key": key}
    big_prompt = "x" * 990  # not even its prompt's bound (990 + 16) fits FREE's 1000 tokens
    refused = await chat(gateway, key, big_prompt)
    assert refused.status_code == 403
    assert (refused.json()["minimumTokens"], refused.json()["remainingTokens"]) == (1007, 1000)
    for _ in range(3):  # the refused chat did not use a place in the window
        assert (await gateway.get("/test", headers=headers)).status_code == 200
    assert (await gateway.get("/test", headers=headers)).status_code == 429  # FREE: 3 a minute

    assert await usage_status(other, key) == 200  # the other replica caches the FREE plan
    user_id = await user_id_of(gateway, email)
    upgrade = await gateway.put(
        f"/admin/users/{user_id}/plan", json={"plan": "PRO"}, headers=AS_ADMIN
    )
    assert upgrade.status_code == 200, upgrade.text
    assert upgrade.json()["monthlyLimit"] == 50000
    assert upgrade.json()["requestsPerWindow"] == 50

    # The next request, on the replica that made the change: PRO limits.
    test = await gateway.get("/test", headers=headers)
    assert test.status_code == 200
    assert test.json()["user"]["plan"] == "PRO"
    assert test.headers["x-ratelimit-limit-requests"] == "50"
    reply = await chat(gateway, key, big_prompt)
    assert reply.status_code == 200
    assert (await gateway.get("/v1/usage", headers=headers)).json()["monthlyLimit"] == 50000
    # The other replica: at once too (its cached FREE verification is out of date).
    assert (await other.get("/test", headers=headers)).headers["x-ratelimit-limit-requests"] == "50"

    usage = await gateway.get(f"/admin/users/{user_id}/usage", headers=AS_ADMIN)
    assert usage.status_code == 200
    figures = usage.json()
    assert (figures["plan"], figures["monthlyLimit"], figures["usedTokens"]) == ("PRO", 50000, 12)
    assert figures["remainingTokens"] == 50000 - 12


# -- the admin API on the shared stack ----------------------------------------------------------


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The shared stack's gateway, called directly (its ADMIN_TOKEN comes from BASE_ENV)."""
    async with _client(stack.service_url("gateway")) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer not-the-admin-token-000"}, {"x-admin-token": "nope"}],
)
async def test_the_admin_api_refuses_a_missing_or_wrong_token(
    gateway: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await gateway.get("/admin/users", params={"email": "a@example.com"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "admin_auth_failed"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/users?email=a@example.com"),
        ("PUT", "/admin/users/" + "a" * 24 + "/plan"),
        ("GET", "/admin/users/" + "a" * 24 + "/requests"),
        ("GET", "/admin/"),
    ],
)
async def test_the_admin_api_is_not_reachable_through_nginx(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await api.request(method, path, json={"plan": "PRO"}, headers=AS_ADMIN)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def chat_with_id(client: httpx.AsyncClient, key: str, request_id: str) -> int:
    response = await client.post(
        "/v1/chat",
        json={"prompt": "Hello"},
        headers={"x-api-key": key, "x-request-id": request_id},
    )
    return response.status_code


async def test_request_history_pages_newest_first_without_prompts(
    api: httpx.AsyncClient, gateway: httpx.AsyncClient, llm: FakeOllamaControl
) -> None:
    email, key = await register_email(api)
    request_ids = [f"hist-{uuid.uuid4().hex[:8]}-{i}" for i in range(5)]
    for request_id in request_ids:
        assert await chat_with_id(api, key, request_id) == 200
    user_id = await user_id_of(gateway, email)
    path = f"/admin/users/{user_id}/requests"

    seen: list[dict[str, Any]] = []
    pages = 0
    params: dict[str, Any] = {"limit": 2}
    while True:
        response = await gateway.get(path, params=params, headers=AS_ADMIN)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        seen += page["data"]
        if page["nextCursor"] is None:
            break
        params = {"limit": 2, "before": page["nextCursor"]}
    assert pages == 3
    assert [item["requestId"] for item in seen] == request_ids[::-1]
    assert {(item["status"], item["tokensUsed"]) for item in seen} == {("SUCCESS", 12)}
    assert all("prompt" not in item and "output" not in item for item in seen)

    bad = await gateway.get(path, params={"before": "garbage"}, headers=AS_ADMIN)
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_cursor")
    too_many = await gateway.get(path, params={"limit": 501}, headers=AS_ADMIN)
    assert too_many.status_code == 400
