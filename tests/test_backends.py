"""Several model backends behind one model, through the whole stack: three deterministic
Ollama-protocol servers (a, b, c) and the real embedded model as the fallback group.

Routes (ROUTES_FILE): `llama3` on a (weight 1), b (1) and c (2), then the embedded model at
priority 1 (used only while none of a, b, c can answer); `tiny` on a and b. Every test counts what
the clients received: answers, and the tokens charged against each user's month.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from infergate_devstack.nginx import UNLIMITED_EDGE
from infergate_devstack.ports import Ports
from infergate_devstack.stack import Stack, StackConfig

from tests.backend_fleet import Fleet, concurrently, wait_until
from tests.helpers import provisioned, register, usage

pytestmark = pytest.mark.e2e

EMBEDDED = "embedded"
ECHO = "echo: "  # how the test servers' answers start (the embedded model's never do)


@pytest.fixture(scope="module")
async def fleet() -> AsyncIterator[Fleet]:
    async with Fleet.running() as servers:
        yield servers


def routes(fleet: Fleet, directory: Path, embedded_url: str) -> Path:
    path = fleet.routes_file(
        directory,
        {
            "llama3": [{"name": "a"}, {"name": "b"}, {"name": "c", "weight": 2}],
            "tiny": [{"name": "a"}, {"name": "b"}],
        },
    )
    fallback = f'\n[[models.llama3]]\nurl = "{embedded_url}"\nname = "{EMBEDDED}"\npriority = 1\n'
    path.write_text(path.read_text() + fallback)
    return path


@pytest.fixture(scope="module")
def routed_stack(tmp_path_factory: pytest.TempPathFactory, fleet: Fleet) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("routed")
    ports = Ports.free()
    env = {
        **UNLIMITED_EDGE,
        "FREE_RATE_LIMIT": "100000",
        "REGISTRATION_RATE_LIMIT": "100000",
        "FREE_MONTHLY_TOKENS": "1000000",
        "MODELS": "llama3,tiny",
        "MAX_OUTPUT_TOKENS": "8",  # the embedded model answers in well under a second
        "ROUTES_FILE": str(routes(fleet, directory, f"http://127.0.0.1:{ports.llm}")),
        "BACKEND_PROBE_INTERVAL_SECONDS": "0.2",
        "BACKEND_COOLDOWN_SECONDS": "1",
        # ai-service routes around a failing backend: the gateway's own breaker never opens.
        "CIRCUIT_FAILURE_THRESHOLD": "1000",
    }
    # No ollama_url: the stack starts the embedded model, the routes' fallback group.
    config = StackConfig(data_dir=provisioned(directory / "stack"), ports=ports, env=env)
    with Stack(config) as stack:
        yield stack


@pytest.fixture
async def api(routed_stack: Stack, fleet: Fleet) -> AsyncIterator[httpx.AsyncClient]:
    await fleet.ready_for_test()
    async with httpx.AsyncClient(base_url=routed_stack.public_url, timeout=60.0) as client:
        # Every server back in rotation (a test may have stopped some): each takes a share again.
        await wait_until(lambda: all_answering(client, fleet), what="every backend in rotation")
        yield client


async def all_answering(client: httpx.AsyncClient, fleet: Fleet) -> bool:
    before = await fleet.chat_calls()
    key = await register(client)
    await asyncio.gather(*(chat(client, key) for _ in range(12)))
    after = await fleet.chat_calls()
    return all(after[name] > before[name] for name in after)


async def chat(client: httpx.AsyncClient, key: str, *, model: str = "llama3") -> dict[str, Any]:
    response = await client.post(
        "/v1/chat", json={"prompt": "Hello there", "model": model}, headers={"x-api-key": key}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def load(
    client: httpx.AsyncClient, keys: list[str], count: int, *, model: str = "llama3"
) -> list[tuple[str, dict[str, Any]]]:
    """`count` chats, 8 at a time, spread over the users; each user's key with its answer."""

    async def one(index: int) -> tuple[str, dict[str, Any]]:
        key = keys[index % len(keys)]
        return key, await chat(client, key, model=model)

    return await concurrently(count, one, width=8)


async def assert_charged_what_clients_received(
    client: httpx.AsyncClient, answers: list[tuple[str, dict[str, Any]]]
) -> None:
    """Each user's month went down by exactly the tokens their answers said (no double
    charge for a retried call)."""
    received: dict[str, int] = {}
    for key, answer in answers:
        received[key] = received.get(key, 0) + answer["tokensUsed"]
    for key, tokens in received.items():
        assert (await usage(client, key))["usedTokens"] == tokens


async def users(client: httpx.AsyncClient, count: int = 4) -> list[str]:
    return list(await asyncio.gather(*(register(client) for _ in range(count))))


async def test_chats_spread_over_the_first_group_by_weight(
    api: httpx.AsyncClient, fleet: Fleet
) -> None:
    before = await fleet.chat_calls()
    answers = await load(api, await users(api), 200)
    calls = {name: n - before[name] for name, n in (await fleet.chat_calls()).items()}
    assert sum(calls.values()) == 200  # none went to the embedded model (priority 1)
    assert all(answer["output"].startswith(ECHO) for _, answer in answers)
    assert 0.35 < calls["c"] / 200 < 0.65, calls
    assert min(calls["a"], calls["b"]) > 25, calls


async def test_a_backend_killed_under_load_costs_no_client_an_error(
    api: httpx.AsyncClient, fleet: Fleet
) -> None:
    keys = await users(api)
    first = await load(api, keys, 40)
    fleet.stop("b")
    # Every chat answered (a call refused by b is retried on another backend before any byte).
    rest = await load(api, keys, 160)
    assert all(answer["output"].startswith(ECHO) for _, answer in rest)
    await assert_charged_what_clients_received(api, first + rest)


async def test_a_slow_backend_gets_less_work(api: httpx.AsyncClient, fleet: Fleet) -> None:
    await fleet.control("a").configure(delay_s=0.3)
    before = await fleet.chat_calls()
    await load(api, await users(api), 120)
    calls = {name: n - before[name] for name, n in (await fleet.chat_calls()).items()}
    assert calls["a"] * 2 < calls["b"], calls


async def test_the_fallback_group_answers_only_while_the_first_is_down(
    api: httpx.AsyncClient, fleet: Fleet
) -> None:
    probe, key = await users(api, 2)
    for name in ("a", "b", "c"):
        fleet.stop(name)

    async def fallback_answers() -> bool:
        response = await api.post(
            "/v1/chat", json={"prompt": "Hello there"}, headers={"x-api-key": probe}
        )
        # Until a, b and c are each found down, a chat may fail (one retry per call).
        return response.status_code == 200 and not response.json()["output"].startswith(ECHO)

    await wait_until(fallback_answers, what="the fallback group answering")
    fallback = await load(api, [key], 6)
    # The real embedded model answered: its own words and counts, charged as received.
    assert not any(answer["output"].startswith(ECHO) for _, answer in fallback)
    assert all(answer["tokensUsed"] > 0 for _, answer in fallback)
    await assert_charged_what_clients_received(api, fallback)
    for name in ("a", "b", "c"):
        fleet.start(name)

    async def first_group_back() -> bool:
        output: str = (await chat(api, probe))["output"]
        return output.startswith(ECHO)

    await wait_until(first_group_back, what="the first group back in rotation")


async def test_a_model_missing_on_one_backend_takes_it_out_for_that_model_only(
    api: httpx.AsyncClient, fleet: Fleet
) -> None:
    await fleet.control("a").configure(models=["llama3:latest", "tiny:latest"])
    keys = await users(api)
    before = await fleet.chat_calls()
    tiny = await load(api, keys, 40, model="tiny")
    during_tiny = await fleet.chat_calls()
    llama = await load(api, keys, 40)
    after = await fleet.chat_calls()
    # Every tiny chat answered by a; b was asked at most a few times (404, then retried on a
    # and taken out for tiny), and it kept its share of llama3.
    assert during_tiny["a"] - before["a"] == 40
    assert during_tiny["b"] - before["b"] <= 3
    assert after["b"] - during_tiny["b"] >= 4
    await assert_charged_what_clients_received(api, tiny + llama)
    listed = await api.get("/v1/models", headers={"x-api-key": keys[0]})
    assert {model["id"] for model in listed.json()["data"]} == {"llama3", "tiny"}


async def test_failures_before_the_first_byte_are_retried_and_charged_once(
    api: httpx.AsyncClient, fleet: Fleet
) -> None:
    await fleet.control("b").configure(fail_status=500)
    before = await fleet.chat_calls()
    answers = await load(api, await users(api), 80)
    calls = {name: n - before[name] for name, n in (await fleet.chat_calls()).items()}
    assert calls["b"] > 0  # b was tried, failed, and every such call was answered elsewhere
    assert calls["a"] + calls["c"] == 80
    await assert_charged_what_clients_received(api, answers)
