"""The LLM path's circuit breaker: its states, and the gateway refusing at once while open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
import redis.asyncio as redis
from api_gateway.main import create_app
from fastapi import FastAPI
from gateway_downstream import VALID_KEY, Downstream, gateway_settings
from infergate_common.circuit_breaker import CircuitBreaker, CircuitState
from infergate_common.errors import UpstreamUnavailableError

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


def state_of(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_circuit_opens_after_the_threshold_and_refuses_with_retry_after() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert state_of(breaker) is CircuitState.CLOSED
    breaker.before_call()
    breaker.record_failure()
    assert state_of(breaker) is CircuitState.OPEN
    clock.now += 4
    with pytest.raises(UpstreamUnavailableError) as refused:
        breaker.before_call()
    assert refused.value.error_code == "circuit_open"
    assert refused.value.headers["Retry-After"] == "6"


def test_a_tripped_circuit_waits_for_a_probe_not_for_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=10, clock=clock)
    breaker.trip()
    assert breaker.state is CircuitState.OPEN
    clock.now += 60
    assert not breaker.allows_call()
    assert not breaker.try_call()
    breaker.half_open()  # a probe found it answering
    assert breaker.try_call()
    assert not breaker.try_call()  # one trial at a time
    breaker.record_success()
    assert breaker.allows_call()


def test_a_success_resets_the_run_of_failures() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown_s=10, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert state_of(breaker) is CircuitState.CLOSED


def test_after_the_cooldown_one_probe_passes_and_its_result_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    breaker.before_call()  # the probe
    assert state_of(breaker) is CircuitState.HALF_OPEN
    with pytest.raises(UpstreamUnavailableError):
        breaker.before_call()  # only one probe at a time
    breaker.record_failure()
    assert state_of(breaker) is CircuitState.OPEN
    clock.now += 5
    breaker.before_call()
    breaker.record_success()
    assert state_of(breaker) is CircuitState.CLOSED
    breaker.before_call()


def test_an_abandoned_probe_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=1, clock=clock)
    breaker.record_failure()
    clock.now += 1
    breaker.before_call()
    breaker.record_abandoned()
    breaker.before_call()
    assert state_of(breaker) is CircuitState.HALF_OPEN


@pytest.fixture
async def gateway(
    app_client: AppClient, redis_port: int, redis_client: redis.Redis, downstream: Downstream
) -> AsyncIterator[httpx.AsyncClient]:
    settings = gateway_settings(
        redis_port, circuit_failure_threshold=2, circuit_cooldown_seconds=0.5, free_rate_limit=1000
    )
    async with app_client(create_app(settings, transport=downstream.transport())) as client:
        yield client


async def test_the_gateway_stops_calling_a_failing_model_then_probes_and_recovers(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    def failing(_: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"message": "LLM unavailable", "code": "llm_unavailable"})

    downstream.override("ai", "/ai/generate", failing)

    async def chat() -> httpx.Response:
        return await gateway.post(
            "/v1/chat", json={"prompt": "hi"}, headers={"x-api-key": VALID_KEY}
        )

    assert [(await chat()).status_code for _ in range(2)] == [503, 503]
    calls = len(downstream.paths("ai"))
    reserves = len(downstream.bodies("usage", "/usage/reserve"))
    refused = await chat()
    assert refused.status_code == 503
    assert refused.json()["code"] == "circuit_open"
    assert int(refused.headers["retry-after"]) >= 1
    assert len(downstream.paths("ai")) == calls  # not called while open
    assert len(downstream.bodies("usage", "/usage/reserve")) == reserves  # nothing reserved
    await asyncio.sleep(0.6)
    del downstream.overrides[("ai", "/ai/generate")]
    assert (await chat()).status_code == 200  # the probe succeeds and closes the circuit
    assert (await chat()).status_code == 200
