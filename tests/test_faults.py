"""Faults under a steady load of chats (half of them streamed): every answer stays JSON (200, 503
or 504), everything recovers by itself, and afterwards every user's charge in the ledger is what
their clients were told (the audit, see faults.py). Each test waits on conditions, never on the
clock, and starts from a closed circuit and its own users and LLM settings."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from infergate_devstack.nginx import UNLIMITED_EDGE
from infergate_devstack.stack import Stack
from pymongo import AsyncMongoClient

from tests.fake_ollama_fixtures import FakeOllamaControl, FakeOllamaProcess
from tests.faults import LOAD_PROMPT, Ledger, Load, audit, read_stream, user_ids, wait_until
from tests.helpers import local_stack, register

pytestmark = pytest.mark.faults

OVERHEAD, MAX_OUTPUT = 16, 100
FAULT_ENV = {
    **UNLIMITED_EDGE,
    "FREE_RATE_LIMIT": "100000",
    "REGISTRATION_RATE_LIMIT": "100000",
    "FREE_MONTHLY_TOKENS": "1000000",
    "RESERVATION_TTL_SECONDS": "3",
    "RESERVATION_SWEEP_SECONDS": "0.5",
    "OLLAMA_TIMEOUT": "3",
    "AI_TIMEOUT": "6",
    "CIRCUIT_FAILURE_THRESHOLD": "3",
    "CIRCUIT_COOLDOWN_SECONDS": "1",
    "SETTLEMENT_RETRY_SECONDS": "2",
    "SETTLEMENT_CLAIM_SECONDS": "0.5",
    "MAX_OUTPUT_TOKENS": str(MAX_OUTPUT),
    "PROMPT_TOKEN_OVERHEAD": str(OVERHEAD),
}


def bound(prompt: str) -> int:
    """The upper bound a chat of `prompt` reserves: its bytes, the overhead, the output cap."""
    return len(prompt.encode()) + OVERHEAD + MAX_OUTPUT


def start_stack(
    tmp: pytest.TempPathFactory, llm: FakeOllamaProcess, name: str, **env: str
) -> Stack:
    return local_stack(tmp.mktemp(name), llm.url, {**FAULT_ENV, **env}, gateway_replicas=2)


@pytest.fixture(scope="module")
def fault_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllamaProcess
) -> Iterator[Stack]:
    with start_stack(tmp_path_factory, fake_ollama, "faults") as stack:
        yield stack


def restore(stack: Stack) -> None:
    """Whatever a test stopped, froze or killed runs again (a failed test leaves no harm)."""
    for name in stack.process_names():
        process = stack.process(name)
        process.resume()
        if not process.running():
            stack.start(name)


@pytest.fixture(autouse=True)
def _restored(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("fault_stack", "drain_stack", "closed_stack"):
        if name in request.fixturenames:
            restore(request.getfixturevalue(name))


@pytest.fixture
async def client(fault_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fault_stack.public_url, timeout=30.0) as c:
        yield c


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(upper_bound=bound(LOAD_PROMPT))


@pytest.fixture
async def keys(
    fault_stack: Stack, client: httpx.AsyncClient, fake_ollama_control: FakeOllamaControl
) -> list[str]:
    """Five fresh users, once every gateway answers chats again (circuits closed)."""
    probe = await register(client)
    for name in ("gateway", "gateway-1"):
        async with httpx.AsyncClient(base_url=fault_stack.service_url(name), timeout=30) as direct:
            await wait_until(functools.partial(chat_ok, direct, probe), timeout_s=30)
    return [await register(client) for _ in range(5)]


async def chat_ok(client: httpx.AsyncClient, key: str) -> bool:
    try:
        response = await client.post("/v1/chat", json={"prompt": "ok?"}, headers={"x-api-key": key})
    except httpx.TransportError:
        return False
    return response.status_code == 200


async def checked(stack: Stack, ledger: Ledger, load: Load | None = None) -> None:
    if load is not None:
        assert load.unexpected() == {}
        assert load.not_json == 0
    await audit(
        base_url=stack.public_url,
        mongo_uri=stack.mongo_uri,
        redis_url=stack.redis_url,
        ledger=ledger,
    )


async def llm_busy(control: FakeOllamaControl, *prompts: str) -> None:
    """Until the LLM is working on a chat of each of `prompts` (they are reserved by then)."""

    async def busy() -> bool:
        working = (await control.stats())["inputs_in_flight"]
        return all(prompt in working for prompt in prompts)

    await wait_until(busy, timeout_s=10, interval_s=0.02)


async def test_redis_outage_fails_open_and_limiting_resumes(
    fault_stack: Stack, client: httpx.AsyncClient, keys: list[str], ledger: Ledger
) -> None:
    async with Load(fault_stack.public_url, keys[1:], ledger) as load:
        fault_stack.stop("redis")
        during = await client.post("/v1/chat", json={"prompt": "x"}, headers={"x-api-key": keys[0]})
        assert during.status_code == 200  # RATE_LIMIT_FAILURE_MODE=open; settled directly
        assert "x-ratelimit-remaining-requests" not in during.headers
        ledger.told(keys[0], during.json()["tokensUsed"])
        fault_stack.start("redis")

        async def limiting() -> bool:
            response = await client.get("/test", headers={"x-api-key": keys[0]})
            return "x-ratelimit-remaining-requests" in response.headers

        recovered = await wait_until(limiting, timeout_s=5)
        print(f"redis: limiting resumed {recovered:.2f} s after Redis is back")
    logs = (
        fault_stack.log_path("gateway").read_text() + fault_stack.log_path("gateway-1").read_text()
    )
    assert '"rate_limiter_unavailable"' in logs
    await checked(fault_stack, ledger, load)


async def test_usage_service_killed_at_the_settle_moment_loses_no_charge(
    fault_stack: Stack,
    client: httpx.AsyncClient,
    keys: list[str],
    ledger: Ledger,
    fake_ollama_control: FakeOllamaControl,
) -> None:
    """The model has finished, usage-service is gone: the answers go out, and the charges are
    applied once it is back (before, they were abandoned and released at 0 by the sweeper)."""
    await fake_ollama_control.configure(delay_s=1.0, chunk_delay_s=0.05)
    plain = asyncio.create_task(
        client.post("/v1/chat", json={"prompt": "plain"}, headers={"x-api-key": keys[0]})
    )
    streamed = asyncio.create_task(read_stream(client, keys[1], "streamed"))
    await llm_busy(fake_ollama_control, "plain", "streamed")
    fault_stack.stop("usage", kill=True)
    answer, stream = await plain, await streamed
    assert answer.status_code == 200
    assert stream.status == 200
    assert stream.ending is not None
    assert stream.ending["type"] == "done"
    ledger.told(keys[0], answer.json()["tokensUsed"])
    ledger.told(keys[1], stream.ending["tokensUsed"])
    fault_stack.start("usage")
    await fake_ollama_control.configure(delay_s=0.0, chunk_delay_s=0.0)
    async with Load(fault_stack.public_url, keys[3:], ledger) as load:
        await wait_until(lambda: chat_ok(client, keys[2]), timeout_s=10)
        ledger.told(keys[2], 12)  # chat_ok's one successful chat: 7 + 5 tokens
    await checked(fault_stack, ledger, load)


async def test_database_stopped_for_a_minute_under_load_loses_no_charge(
    fault_stack: Stack,
    client: httpx.AsyncClient,
    keys: list[str],
    ledger: Ledger,
    fake_ollama_control: FakeOllamaControl,
) -> None:
    await fake_ollama_control.configure(delay_s=0.3)  # chats in flight when it stops
    async with Load(fault_stack.public_url, keys[1:], ledger) as load:
        await wait_until(lambda: _answered(load, 10), timeout_s=30)
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
        await asyncio.sleep(60)  # the outage itself: a minute of load against a stopped database
        fault_stack.start("mongo")
        recovered = await wait_until(lambda: chat_ok(client, keys[0]), timeout_s=15)
        print(f"mongo: chats succeed again {recovered:.2f} s after it is back")
        ledger.told(keys[0], 12)  # chat_ok's one successful chat: 7 + 5 tokens
    await checked(fault_stack, ledger, load)


async def _answered(load: Load, count: int) -> bool:
    return load.statuses[200] >= count


@pytest.mark.parametrize("service", ["auth", "usage", "ai"])
async def test_a_killed_internal_service_is_503_and_recovers(
    fault_stack: Stack, client: httpx.AsyncClient, keys: list[str], ledger: Ledger, service: str
) -> None:
    async with Load(fault_stack.public_url, keys[1:], ledger) as load:
        fault_stack.stop(service, kill=True)
        response = await client.post(
            "/v1/chat", json={"prompt": "x"}, headers={"x-api-key": keys[0]}
        )
        assert response.status_code == 503
        fault_stack.start(service)
        recovered = await wait_until(lambda: chat_ok(client, keys[0]), timeout_s=5)
        print(f"{service}: chats succeed again {recovered:.2f} s after it is back")
        ledger.told(keys[0], 12)  # the one successful chat of chat_ok: 7 + 5 tokens
    await checked(fault_stack, ledger, load)


async def test_a_failing_llm_is_not_charged_and_trips_the_circuit(
    fault_stack: Stack, keys: list[str], ledger: Ledger, fake_ollama_control: FakeOllamaControl
) -> None:
    gateway = fault_stack.service_url("gateway-1")
    async with httpx.AsyncClient(base_url=gateway, timeout=30.0) as direct:
        await fake_ollama_control.configure(fail_status=500)
        calls_before = (await fake_ollama_control.stats())["chat_calls"]
        statuses = [
            (await direct.post("/v1/chat", json={"prompt": "x"}, headers={"x-api-key": keys[1]}))
            for _ in range(4)
        ]
        assert [r.status_code for r in statuses] == [503] * 4
        assert statuses[-1].json()["code"] == "circuit_open"
        assert "retry-after" in statuses[-1].headers
        calls = (await fake_ollama_control.stats())["chat_calls"] - calls_before
        assert calls == 3  # the fourth was refused without calling the model
        # nginx still reaches both replicas for everything else (a 503 is not a dead server).
        async with httpx.AsyncClient(base_url=fault_stack.public_url, timeout=30) as public:
            for _ in range(4):
                usage = await public.get("/v1/usage", headers={"x-api-key": keys[1]})
                assert usage.status_code == 200
        await fake_ollama_control.configure(fail_status=None)
        recovered = await wait_until(lambda: chat_ok(direct, keys[1]), timeout_s=5)
    print(f"llm: circuit closed and chats succeed {recovered:.2f} s after the LLM heals")
    ledger.told(keys[1], 12)
    await checked(fault_stack, ledger)


async def test_a_slow_llm_is_504_and_not_charged(
    fault_stack: Stack,
    client: httpx.AsyncClient,
    keys: list[str],
    ledger: Ledger,
    fake_ollama_control: FakeOllamaControl,
) -> None:
    await fake_ollama_control.configure(delay_s=4.0)  # OLLAMA_TIMEOUT is 3 s here
    response = await client.post("/v1/chat", json={"prompt": "x"}, headers={"x-api-key": keys[2]})
    assert response.status_code == 504
    assert response.json()["message"] == "AI service timeout"
    ledger.told(keys[2], 0)
    await checked(fault_stack, ledger)


async def test_a_reserve_that_times_out_holds_nothing(
    fault_stack: Stack, keys: list[str], ledger: Ledger
) -> None:
    """usage-service hangs (SIGSTOP) past the gateway's 3 s: the chat is 504, and once it is
    back the reservation it may have stored is released at once, not after its expiry."""
    direct_url = fault_stack.service_url("gateway")
    async with httpx.AsyncClient(base_url=direct_url, timeout=30.0) as direct:
        fault_stack.pause("usage")
        try:
            response = await direct.post(
                "/v1/chat", json={"prompt": "x"}, headers={"x-api-key": keys[0]}
            )
        finally:
            fault_stack.resume("usage")
        assert response.status_code == 504
        ledger.told(keys[0], 0)
        started = time.monotonic()
        await checked(fault_stack, ledger)  # nothing open, nothing charged
        print(f"reserve timeout: released {time.monotonic() - started:.2f} s after usage is back")
        usage = await direct.get("/v1/usage", headers={"x-api-key": keys[0]})
        assert usage.json()["remainingTokens"] == 1_000_000
    # Released by the gateway (TIMEOUT), not left to expire (EXPIRED, after the hold).
    assert await logged_statuses(fault_stack, keys[0]) == ["TIMEOUT"]


async def logged_statuses(stack: Stack, key: str) -> list[str]:
    (user_id,) = (await user_ids(stack.public_url, [key])).values()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_uri)
    try:
        logs = mongo["infergate-usage"]["requestlogs"].find({"userId": user_id})
        return [entry["status"] async for entry in logs]
    finally:
        await mongo.close()


async def test_a_gateway_killed_right_after_answering_loses_no_charge(
    fault_stack: Stack, keys: list[str], ledger: Ledger, fake_ollama_control: FakeOllamaControl
) -> None:
    """The answer went out, its charge is in the outbox (usage-service hangs, so the gateway
    could not deliver it): the gateway dies, and the other replica applies the charge."""
    await fake_ollama_control.configure(delay_s=1.0)
    doomed = fault_stack.service_url("gateway-1")
    async with (
        Load(fault_stack.service_url("gateway"), keys[1:], ledger) as load,
        httpx.AsyncClient(base_url=doomed, timeout=30.0) as direct,
    ):
        chat = asyncio.create_task(
            direct.post("/v1/chat", json={"prompt": "paid"}, headers={"x-api-key": keys[0]})
        )
        await llm_busy(fake_ollama_control, "paid")  # reserved; the model is working
        fault_stack.pause("usage")
        try:
            answer = await chat
            assert answer.status_code == 200
            ledger.told(keys[0], answer.json()["tokensUsed"])
            fault_stack.stop("gateway-1", kill=True)
        finally:
            fault_stack.resume("usage")
        await fake_ollama_control.configure(delay_s=0.0)
        target = load.statuses[200] + 5
        await wait_until(lambda: _answered(load, target), timeout_s=30)
    fault_stack.start("gateway-1")
    await checked(fault_stack, ledger, load)


async def test_a_stream_cut_by_its_gateway_dying_is_charged_in_full(
    fault_stack: Stack, keys: list[str], ledger: Ledger, fake_ollama_control: FakeOllamaControl
) -> None:
    await fake_ollama_control.configure(reply="a long enough answer", chunk_delay_s=0.5)
    seen = asyncio.Event()
    async with httpx.AsyncClient(base_url=fault_stack.service_url("gateway-1"), timeout=30) as c:
        stream = asyncio.create_task(
            read_stream(c, keys[0], "cut", on_delta=lambda n: seen.set() if n >= 2 else None)
        )
        await asyncio.wait_for(seen.wait(), timeout=10)
        fault_stack.stop("gateway-1", kill=True)
        read = await stream
    assert read.cut
    assert read.deltas >= 2
    ledger.told(keys[0], bound("cut"))  # its outcome was never learned: the reservation in full
    await fake_ollama_control.configure(reply=None, chunk_delay_s=0.0)
    fault_stack.start("gateway-1")
    await checked(fault_stack, ledger)  # waits out the stream's deadline (16 s here)


async def test_a_gateway_killed_before_any_output_leaves_no_reservation_behind(
    fault_stack: Stack, keys: list[str], ledger: Ledger, fake_ollama_control: FakeOllamaControl
) -> None:
    await fake_ollama_control.configure(delay_s=2.0)
    async with httpx.AsyncClient(base_url=fault_stack.service_url("gateway-1"), timeout=30) as c:
        request = asyncio.create_task(
            c.post("/v1/chat", json={"prompt": "unanswered"}, headers={"x-api-key": keys[0]})
        )
        await llm_busy(fake_ollama_control, "unanswered")  # reserved, waiting for the model
        fault_stack.stop("gateway-1", kill=True)
        with pytest.raises(httpx.TransportError):
            await request
    await fake_ollama_control.configure(delay_s=0.0)
    fault_stack.start("gateway-1")
    ledger.told(keys[0], 0)  # nothing was produced: released once its hold expires
    await checked(fault_stack, ledger)


async def test_a_killed_replica_is_routed_around_and_nothing_is_charged_twice(
    fault_stack: Stack, keys: list[str], ledger: Ledger
) -> None:
    async with Load(fault_stack.public_url, keys, ledger) as load:
        await wait_until(lambda: _answered(load, 10), timeout_s=30)
        fault_stack.stop("gateway", kill=True)
        before = load.statuses[200]
        await wait_until(lambda: _answered(load, before + 20), timeout_s=30)
    # Only the requests in flight on the killed replica at that moment may have failed.
    failures = sum(n for status, n in load.statuses.items() if status != 200)
    assert failures <= len(keys)
    fault_stack.start("gateway")
    await checked(fault_stack, ledger)


@pytest.fixture(scope="module")
def drain_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllamaProcess
) -> Iterator[Stack]:
    """Chats may take 40 s here (the SIGTERM test streams for 20 s)."""
    env = {"OLLAMA_TIMEOUT": "35", "AI_TIMEOUT": "40"}
    with start_stack(tmp_path_factory, fake_ollama, "drain", **env) as stack:
        yield stack


async def test_sigterm_during_a_20_s_stream_lets_it_finish_and_bills_it(
    drain_stack: Stack, fake_ollama_control: FakeOllamaControl
) -> None:
    ledger = Ledger(upper_bound=bound(LOAD_PROMPT))
    async with httpx.AsyncClient(base_url=drain_stack.public_url, timeout=30.0) as public:
        keys = [await register(public) for _ in range(3)]
    await fake_ollama_control.configure(
        reply="twenty chunks of text, one a second", completion_tokens=20, chunk_delay_s=1.0
    )
    first = asyncio.Event()
    terminating = drain_stack.service_url("gateway-1")
    async with (
        Load(drain_stack.service_url("gateway"), keys[1:], ledger) as load,
        httpx.AsyncClient(base_url=terminating, timeout=60.0) as direct,
    ):
        stream = asyncio.create_task(
            read_stream(direct, keys[0], "long", on_delta=lambda _: first.set())
        )
        await asyncio.wait_for(first.wait(), timeout=10)
        started = time.monotonic()
        await asyncio.to_thread(drain_stack.stop, "gateway-1")  # SIGTERM; waits for its exit
        read = await stream
        print(f"SIGTERM: the gateway exited {time.monotonic() - started:.1f} s later")
        assert read.ending is not None
        assert (read.ending["type"], read.deltas) == ("done", 20)
        assert read.ending["tokensUsed"] == 7 + 20
        ledger.told(keys[0], read.ending["tokensUsed"])
        await fake_ollama_control.configure(reply=None, completion_tokens=5, chunk_delay_s=0.0)
    drain_stack.start("gateway-1")
    await checked(drain_stack, ledger, load)


@pytest.fixture(scope="module")
def closed_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllamaProcess
) -> Iterator[Stack]:
    env = {**UNLIMITED_EDGE, "RATE_LIMIT_FAILURE_MODE": "closed", "REGISTRATION_RATE_LIMIT": "1000"}
    with local_stack(tmp_path_factory.mktemp("closed"), fake_ollama.url, env) as stack:
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
