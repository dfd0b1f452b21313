"""Faults under a steady load of chats: every answer stays JSON (200, 503 or 504), everything
recovers by itself, and afterwards every token is accounted for (the audit)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from infergate_devstack.ports import Ports
from infergate_devstack.stack import Stack, StackConfig

from tests.fake_ollama_fixtures import FakeOllamaControl, FakeOllamaProcess
from tests.faults import Load, audit, wait_until
from tests.helpers import register

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def fault_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllamaProcess
) -> Iterator[Stack]:
    env = {
        "FREE_RATE_LIMIT": "100000",
        "REGISTRATION_RATE_LIMIT": "100000",
        "FREE_MONTHLY_TOKENS": "1000000",
        "RESERVATION_TTL_SECONDS": "3",
        "RESERVATION_SWEEP_SECONDS": "0.5",
        "OLLAMA_TIMEOUT": "3",
        "CIRCUIT_FAILURE_THRESHOLD": "3",
        "CIRCUIT_COOLDOWN_SECONDS": "1",
    }
    config = StackConfig(
        data_dir=tmp_path_factory.mktemp("faults"),
        ports=Ports.free(),
        ollama_url=fake_ollama.url,
        env=env,
        gateway_replicas=2,
    )
    with Stack(config) as stack:
        yield stack


@pytest.fixture
async def client(fault_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fault_stack.public_url, timeout=30.0) as c:
        yield c


@pytest.fixture
async def keys(client: httpx.AsyncClient, fake_ollama_control: FakeOllamaControl) -> list[str]:
    return [await register(client) for _ in range(3)]


async def chat_ok(client: httpx.AsyncClient, key: str) -> bool:
    response = await client.post("/v1/chat", json={"prompt": "ok?"}, headers={"x-api-key": key})
    return response.status_code == 200


async def test_redis_outage_fails_open_and_limiting_resumes(
    fault_stack: Stack, client: httpx.AsyncClient, keys: list[str]
) -> None:
    async with Load(fault_stack.public_url, keys) as load:
        fault_stack.stop("redis")
        await asyncio.sleep(1.0)
        during = await client.post("/v1/chat", json={"prompt": "x"}, headers={"x-api-key": keys[0]})
        assert during.status_code == 200  # RATE_LIMIT_FAILURE_MODE=open
        assert "x-ratelimit-remaining-requests" not in during.headers
        fault_stack.start("redis")

        async def limiting() -> bool:
            response = await client.get("/test", headers={"x-api-key": keys[0]})
            return "x-ratelimit-remaining-requests" in response.headers

        recovered = await wait_until(limiting, timeout_s=5)
        print(f"redis: limiting resumed {recovered:.2f} s after Redis is back")
    assert load.unexpected() == {}
    assert load.not_json == 0
    logs = (
        fault_stack.log_path("gateway").read_text() + fault_stack.log_path("gateway-1").read_text()
    )
    assert '"rate_limiter_unavailable"' in logs
    await audit(fault_stack.mongo_uri)


@pytest.fixture(scope="module")
def closed_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllamaProcess
) -> Iterator[Stack]:
    config = StackConfig(
        data_dir=tmp_path_factory.mktemp("closed"),
        ports=Ports.free(),
        ollama_url=fake_ollama.url,
        env={"RATE_LIMIT_FAILURE_MODE": "closed", "REGISTRATION_RATE_LIMIT": "1000"},
    )
    with Stack(config) as stack:
        yield stack


async def test_redis_outage_fails_closed_when_so_configured(
    closed_stack: Stack, fake_ollama_control: FakeOllamaControl
) -> None:
    async with httpx.AsyncClient(base_url=closed_stack.public_url, timeout=30.0) as client:
        key = await register(client)
        closed_stack.stop("redis")
        refused = await client.post("/v1/chat", json={"prompt": "x"}, headers={"x-api-key": key})
        assert refused.status_code == 503
        assert refused.json()["code"] == "rate_limiter_unavailable"
        closed_stack.start("redis")
        recovered = await wait_until(lambda: chat_ok(client, key), timeout_s=5)
        usage = (await client.get("/v1/usage", headers={"x-api-key": key})).json()
    print(f"closed mode: chats succeed again {recovered:.2f} s after Redis is back")
    assert usage["usedTokens"] == 12  # the refused chat reserved nothing; one chat succeeded


async def test_database_outage_is_503_within_the_timeouts_and_recovers(
    fault_stack: Stack, client: httpx.AsyncClient, keys: list[str]
) -> None:
    async with Load(fault_stack.public_url, keys) as load:
        fault_stack.stop("mongo")
        for method, path, body in (
            ("POST", "/v1/register", {"email": "during-outage@example.com"}),
            ("POST", "/v1/chat", {"prompt": "x"}),
            ("GET", "/v1/usage", None),
        ):
            started = time.monotonic()
            response = await client.request(method, path, json=body, headers={"x-api-key": keys[0]})
            assert response.status_code == 503, (path, response.text)
            assert response.json()["code"]
            assert time.monotonic() - started < 10
        fault_stack.start("mongo")
        recovered = await wait_until(lambda: chat_ok(client, keys[0]), timeout_s=5)
        print(f"mongo: chats succeed again {recovered:.2f} s after it is back")
    assert load.unexpected() == {}
    await audit(fault_stack.mongo_uri)


@pytest.mark.parametrize("service", ["auth", "usage", "ai"])
async def test_a_killed_internal_service_is_503_and_recovers(
    fault_stack: Stack, client: httpx.AsyncClient, keys: list[str], service: str
) -> None:
    async with Load(fault_stack.public_url, keys) as load:
        fault_stack.stop(service, kill=True)
        response = await client.post(
            "/v1/chat", json={"prompt": "x"}, headers={"x-api-key": keys[0]}
        )
        assert response.status_code == 503
        fault_stack.start(service)
        recovered = await wait_until(lambda: chat_ok(client, keys[0]), timeout_s=5)
        print(f"{service}: chats succeed again {recovered:.2f} s after it is back")
    assert load.unexpected() == {}
    assert load.not_json == 0
    await audit(fault_stack.mongo_uri)


async def test_a_failing_llm_is_not_charged_and_trips_the_circuit(
    fault_stack: Stack, keys: list[str], fake_ollama_control: FakeOllamaControl
) -> None:
    gateway = fault_stack.service_url("gateway-1")
    async with httpx.AsyncClient(base_url=gateway, timeout=30.0) as direct:
        await fake_ollama_control.configure(fail_status=500)
        statuses = [
            (await direct.post("/v1/chat", json={"prompt": "x"}, headers={"x-api-key": keys[1]}))
            for _ in range(4)
        ]
        assert [r.status_code for r in statuses] == [503] * 4
        assert statuses[-1].json()["code"] == "circuit_open"
        assert "retry-after" in statuses[-1].headers
        calls = (await fake_ollama_control.stats())["chat_calls"]
        assert calls == 3  # the fourth was refused without calling the model
        await fake_ollama_control.configure(fail_status=None)
        recovered = await wait_until(lambda: chat_ok(direct, keys[1]), timeout_s=5)
    print(f"llm: circuit closed and chats succeed {recovered:.2f} s after the LLM heals")
    await audit(fault_stack.mongo_uri)


async def test_a_slow_llm_is_504_and_not_charged(
    fault_stack: Stack,
    client: httpx.AsyncClient,
    keys: list[str],
    fake_ollama_control: FakeOllamaControl,
) -> None:
    await fake_ollama_control.configure(delay_s=4.0)  # OLLAMA_TIMEOUT is 3 s here
    response = await client.post("/v1/chat", json={"prompt": "x"}, headers={"x-api-key": keys[2]})
    assert response.status_code == 504
    assert response.json()["message"] == "AI service timeout"
    usage = await client.get("/v1/usage", headers={"x-api-key": keys[2]})
    assert usage.json()["usedTokens"] == 0
    await fake_ollama_control.configure(delay_s=0.0)
    await audit(fault_stack.mongo_uri)


async def test_a_gateway_killed_mid_request_leaves_no_reservation_behind(
    fault_stack: Stack, keys: list[str], fake_ollama_control: FakeOllamaControl
) -> None:
    await fake_ollama_control.configure(delay_s=2.0)
    gateway = fault_stack.service_url("gateway-1")
    async with httpx.AsyncClient(base_url=gateway, timeout=30.0) as direct:
        request = asyncio.create_task(
            direct.post("/v1/chat", json={"prompt": "x"}, headers={"x-api-key": keys[0]})
        )
        await asyncio.sleep(0.7)  # reserved, and waiting for the model
        fault_stack.stop("gateway-1", kill=True)
        with pytest.raises(httpx.TransportError):
            await request
    await fake_ollama_control.configure(delay_s=0.0)
    fault_stack.start("gateway-1")
    # RESERVATION_TTL_SECONDS=3: the sweeper releases it; the audit waits for that.
    await audit(fault_stack.mongo_uri)


async def test_a_killed_replica_is_routed_around_and_nothing_is_charged_twice(
    fault_stack: Stack, client: httpx.AsyncClient, keys: list[str]
) -> None:
    async with Load(fault_stack.public_url, keys) as load:
        await asyncio.sleep(0.5)
        fault_stack.stop("gateway", kill=True)
        await asyncio.sleep(1.5)
        before = load.statuses[200]
        await asyncio.sleep(1.0)
        assert load.statuses[200] > before  # the other replica carries the load
    # Only the requests in flight on the killed replica at that moment may have failed.
    failures = sum(n for status, n in load.statuses.items() if status != 200)
    assert failures <= len(keys)
    fault_stack.start("gateway")
    await audit(fault_stack.mongo_uri)


async def test_sigterm_lets_in_flight_requests_finish(
    fault_stack: Stack, keys: list[str], fake_ollama_control: FakeOllamaControl
) -> None:
    await fake_ollama_control.configure(delay_s=1.0)
    gateway = fault_stack.service_url("gateway-1")
    async with httpx.AsyncClient(base_url=gateway, timeout=30.0) as direct:
        request = asyncio.create_task(
            direct.post("/v1/chat", json={"prompt": "x"}, headers={"x-api-key": keys[1]})
        )
        await asyncio.sleep(0.3)
        await asyncio.to_thread(fault_stack.stop, "gateway-1")  # SIGTERM, waits for exit
        response = await request
    assert response.status_code == 200
    await fake_ollama_control.configure(delay_s=0.0)
    fault_stack.start("gateway-1")
    await audit(fault_stack.mongo_uri)
