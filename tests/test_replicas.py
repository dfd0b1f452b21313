"""Two processes of every service behind nginx: limits stay exact across replicas (no user gets a
request over its rate limit or a token over its quota), a revocation made on one gateway applies
on the other from the next request, and killing one replica of each service in turn under load
leaves every answer JSON and every charge exactly what the clients were told (the audit)."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from infergate_devstack.nginx import UNLIMITED_EDGE
from infergate_devstack.stack import Stack

from tests.fake_ollama_fixtures import FakeOllamaControl, FakeOllamaProcess
from tests.faults import (
    LOAD_PROMPT,
    NGINX_LOST_UPSTREAM,
    Ledger,
    Load,
    audit,
    user_ids,
    wait_until,
)
from tests.helpers import local_stack, register, usage

pytestmark = pytest.mark.faults

RATE_LIMIT = 8
SENT_PER_USER = 10  # more than the limit: every user meets it
OVERHEAD, MAX_OUTPUT = 8, 100
# A chat costs the test LLM's 7 prompt tokens and 5 output tokens (12: the rate limit binds
# first, 8 x 12 = 96), or 7 + MAX_OUTPUT (107: the quota binds after about five).
QUOTA = 500
USERS = 200
ADMIN_TOKEN = "replicas-admin-token-0123456789"
REPLICAS = {"gateway": 2, "auth": 2, "usage": 2, "ai": 2}
ENV = {
    **UNLIMITED_EDGE,
    "FREE_RATE_LIMIT": str(RATE_LIMIT),
    "RATE_LIMIT_WINDOW": "600",  # the whole test is inside one window
    "REGISTRATION_RATE_LIMIT": "100000",
    "FREE_MONTHLY_TOKENS": str(QUOTA),
    "MAX_OUTPUT_TOKENS": str(MAX_OUTPUT),
    "PROMPT_TOKEN_OVERHEAD": str(OVERHEAD),
    "RESERVATION_TTL_SECONDS": "3",
    "RESERVATION_SWEEP_SECONDS": "0.5",
    "SETTLEMENT_RETRY_SECONDS": "2",
    "SETTLEMENT_CLAIM_SECONDS": "0.5",
    "OLLAMA_TIMEOUT": "3",
    "AI_TIMEOUT": "6",
    # The load of the kill tests runs on PRO users, whom neither limit stops.
    "PRO_RATE_LIMIT": "1000000",
    "PRO_MONTHLY_TOKENS": "100000000",
    "ADMIN_TOKEN": ADMIN_TOKEN,
}


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllamaProcess
) -> Iterator[Stack]:
    with local_stack(
        tmp_path_factory.mktemp("replicas"), fake_ollama.url, ENV, replicas=REPLICAS
    ) as running:
        yield running


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=stack.public_url, timeout=60.0, limits=limits) as c:
        yield c


async def _register_many(client: httpx.AsyncClient, count: int) -> list[str]:
    gate = asyncio.Semaphore(8)

    async def one() -> str:
        async with gate:
            return await register(client)

    return list(await asyncio.gather(*(one() for _ in range(count))))


def test_every_service_runs_twice_and_the_gateways_know_both_of_each(stack: Stack) -> None:
    for component, count in REPLICAS.items():
        names = stack.replica_names(component)
        assert len(names) == count
        assert all(stack.process(name).running() for name in names)


async def _hammer(
    client: httpx.AsyncClient, keys: list[str]
) -> tuple[dict[str, Counter[str]], Counter[str]]:
    """SENT_PER_USER chats of every user, interleaved with everyone else's (64 in flight, through
    both gateways): each user's outcomes (status or error code) and the tokens they were told."""
    outcomes: dict[str, Counter[str]] = {key: Counter() for key in keys}
    told: Counter[str] = Counter()
    gate = asyncio.Semaphore(64)

    async def chat(key: str) -> None:
        async with gate:
            response = await client.post(
                "/v1/chat", json={"prompt": "q"}, headers={"x-api-key": key}
            )
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        outcomes[key][str(body.get("code", response.status_code))] += 1
        if response.status_code == 200:
            told[key] += body["tokensUsed"]

    await asyncio.gather(*(chat(key) for _ in range(SENT_PER_USER) for key in keys))
    return outcomes, told


async def test_200_users_at_once_each_get_exactly_their_rate_limit(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    keys = await _register_many(client, USERS)

    outcomes, told = await _hammer(client, keys)

    for seen in outcomes.values():
        assert sum(seen.values()) == SENT_PER_USER
        assert set(seen) <= {"200", "rate_limited", "quota_busy", "quota_exceeded"}, seen
        # Counted in the window: answered, or refused by a busy quota (a chat the quota refuses
        # outright gives its place back). Exactly the limit: not one more, not one less.
        assert seen["200"] + seen["quota_busy"] == RATE_LIMIT, seen
        assert seen["rate_limited"] > 0
    for key in keys[:10]:
        assert (await usage(client, key))["usedTokens"] == told[key]


async def test_users_at_once_never_get_a_token_over_their_quota(
    stack: Stack, client: httpx.AsyncClient, fake_ollama_control: FakeOllamaControl
) -> None:
    await fake_ollama_control.configure(completion_tokens=MAX_OUTPUT)  # ~5 chats fill the quota
    keys = await _register_many(client, USERS // 4)

    outcomes, told = await _hammer(client, keys)

    for key, seen in outcomes.items():
        assert told[key] <= QUOTA, (seen, told[key])
        assert seen["quota_exceeded"] > 0, seen
        assert seen["rate_limited"] == 0, seen  # refused by the quota: their places given back
    for key in keys[:10]:
        month = await usage(client, key)
        assert month["usedTokens"] == told[key] <= month["monthlyLimit"] == QUOTA


async def test_a_revocation_or_rotation_on_one_gateway_applies_on_the_other_at_once(
    stack: Stack,
) -> None:
    first, second = (stack.service_url(name) for name in stack.replica_names("gateway"))
    async with (
        httpx.AsyncClient(base_url=first, timeout=30.0) as on_first,
        httpx.AsyncClient(base_url=second, timeout=30.0) as on_second,
    ):
        keys = [await register(on_first) for _ in range(5)]
        for key in keys:  # each key verified and cached on the second gateway
            response = await on_second.get("/test", headers={"x-api-key": key})
            assert response.status_code == 200
        for key in keys[:3]:
            revoked = await on_first.delete("/v1/keys/current", headers={"x-api-key": key})
            assert revoked.status_code == 200, revoked.text

            after = await on_second.get("/test", headers={"x-api-key": key})

            assert after.status_code == 401, after.text
        for key in keys[3:]:
            rotated = await on_first.post("/v1/keys/rotate", headers={"x-api-key": key})
            assert rotated.status_code == 200, rotated.text

            old = await on_second.get("/test", headers={"x-api-key": key})
            new = await on_second.get("/test", headers={"x-api-key": rotated.json()["apiKey"]})

            assert (old.status_code, new.status_code) == (401, 200), old.text


async def _pro_users(stack: Stack, client: httpx.AsyncClient, count: int) -> list[str]:
    """Fresh users moved to PRO by the admin API (on a gateway: nginx does not route /admin)."""
    keys = await _register_many(client, count)
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=stack.service_url("gateway"), timeout=30) as gateway:
        for user_id in (await user_ids(stack.public_url, keys)).values():
            changed = await gateway.put(
                f"/admin/users/{user_id}/plan", json={"plan": "PRO"}, headers=admin
            )
            assert changed.status_code == 200, changed.text
    return keys


async def _answered(load: Load, count: int) -> bool:
    return load.statuses[200] >= count


@pytest.mark.parametrize("component", ["gateway", "auth", "usage", "ai"])
async def test_killing_one_replica_under_load_keeps_answers_json_and_charges_exact(
    stack: Stack, client: httpx.AsyncClient, component: str
) -> None:
    """SIGKILL one replica of the service while 8 clients chat (half streamed); every answer is
    JSON 200 or 503/504 (only what was in flight on the killed process may fail), chats keep
    succeeding through the other replica, and each user's charge is what they were told."""
    keys = await _pro_users(stack, client, 8)
    ledger = Ledger(upper_bound=len(LOAD_PROMPT.encode()) + OVERHEAD + MAX_OUTPUT)
    victim = stack.replica_names(component)[-1]
    try:
        async with Load(stack.public_url, keys, ledger) as load:
            await wait_until(functools.partial(_answered, load, 8), timeout_s=30)
            stack.stop(victim, kill=True)
            before = load.statuses[200]
            await wait_until(functools.partial(_answered, load, before + 16), timeout_s=30)
    finally:
        if not stack.process(victim).running():
            stack.start(victim)
    # nginx answers 502 (JSON) for a chat in flight on a gateway that died: its outcome unknown.
    lost = {NGINX_LOST_UPSTREAM} if component == "gateway" else set()
    assert set(load.unexpected()) <= lost, load.statuses
    assert load.not_json == 0
    failures = sum(n for status, n in load.statuses.items() if status != 200)
    assert failures <= len(keys), load.statuses
    await audit(
        base_url=stack.public_url,
        mongo_uri=stack.mongo_uri,
        redis_url=stack.redis_url,
        ledger=ledger,
    )
