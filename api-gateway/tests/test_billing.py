"""Billing through faults, with auth, usage and ai replaced at the HTTP edge and a real Redis: the
answer never waits for the ledger, a charge is never lost, a reservation can always be undone."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from api_gateway.billing import Billing
from api_gateway.clients import UsageClient
from api_gateway.main import create_app
from api_gateway.settlement_outbox import OutboxKeys, SettlementOutbox
from api_gateway.settler import Settler
from fastapi import FastAPI
from gateway_downstream import TOKEN, USER_ID, VALID_KEY, Downstream, gateway_settings
from infergate_common.billing import RequestStatus, Settlement
from infergate_common.http_client import build_internal_client
from infergate_common.validation import Plan
from infergate_devstack.ports import free_ports
from pydantic import SecretStr
from recorded_metrics import Recorded

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]
KEY = {"x-api-key": VALID_KEY}
PROMPT_BOUND = len(b"Hello") + 64  # the prompt's bytes and PROMPT_TOKEN_OVERHEAD
FAST_RETRIES = {"settlement_retry_seconds": 0.2, "settlement_claim_seconds": 0.05}
RATE_LIMIT = {"free_rate_limit": 3}


def unavailable(_: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"message": "Database unavailable", "code": "db"})


@pytest.fixture
async def gateway(
    app_client: AppClient, downstream: Downstream, redis_port: int, redis_client: redis.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    settings = gateway_settings(redis_port, **FAST_RETRIES, **RATE_LIMIT)
    app = create_app(settings, transport=downstream.transport())
    async with app_client(app) as client:
        yield client


async def chat(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/chat", json={"prompt": "Hello", **body}, headers=KEY)


async def wait_until_empty(client: redis.Redis, *, timeout_s: float = 5.0) -> None:
    """Until every settlement in the outbox has been applied and acknowledged."""
    async with asyncio.timeout(timeout_s):
        for _ in itertools.count():
            if not await client.hlen(OutboxKeys().records):
                return
            await asyncio.sleep(0.02)


async def test_the_answer_does_not_wait_for_the_ledger_and_is_charged_once_it_is_back(
    gateway: httpx.AsyncClient, downstream: Downstream, redis_client: redis.Redis
) -> None:
    downstream.override("usage", "/usage/settlements", unavailable)
    response = await chat(gateway)
    assert response.status_code == 200
    assert response.json()["tokensUsed"] == 12
    assert await redis_client.hlen(OutboxKeys().records) == 1  # recorded before the answer
    await downstream.settled(2)  # the first delivery, then a retry, both refused
    del downstream.overrides[("usage", "/usage/settlements")]
    await wait_until_empty(redis_client)
    delivered = downstream.settlements()[-1]
    assert (delivered["status"], delivered["promptTokens"], delivered["completionTokens"]) == (
        "SUCCESS",
        9,
        3,
    )


async def test_a_reserve_that_times_out_is_released_by_its_id(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    def too_slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=request)

    downstream.override("usage", "/usage/reserve", too_slow)
    response = await chat(gateway)
    assert response.status_code == 504
    reservation = downstream.bodies("usage", "/usage/reserve")[0]
    released = (await downstream.settled(1))[0]
    assert released["reservationId"] == reservation["reservationId"]
    assert (released["status"], released["promptTokens"], released["completionTokens"]) == (
        "TIMEOUT",
        0,
        0,
    )
    assert downstream.paths("ai") == []


async def test_a_charge_that_cannot_be_saved_anywhere_withholds_the_answer(
    app_client: AppClient, downstream: Downstream
) -> None:
    (dead_redis,) = free_ports(1)
    settings = gateway_settings(dead_redis, usage_timeout=1.0, **FAST_RETRIES)
    downstream.override("usage", "/usage/settlements", unavailable)
    async with app_client(create_app(settings, transport=downstream.transport())) as gateway:
        response = await chat(gateway)
    assert response.status_code == 503
    assert response.json()["code"] == "billing_unavailable"
    assert "Hi!" not in response.text


async def test_a_short_month_caps_the_models_output_to_what_was_reserved(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    def what_is_left(request: httpx.Request) -> httpx.Response:
        body: dict[str, Any] = json.loads(request.content)
        return httpx.Response(
            201,
            json={
                "reservationId": body["reservationId"],
                "reservedTokens": PROMPT_BOUND + 10,
                "monthlyTokenLimit": 5000,
                "remainingTokens": 0,
            },
        )

    downstream.override("usage", "/usage/reserve", what_is_left)
    response = await chat(gateway)
    assert response.status_code == 200
    assert downstream.bodies("ai", "/ai/generate")[0]["maxTokens"] == 10
    settled = (await downstream.settled(1))[0]
    assert settled["reservedTokens"] == PROMPT_BOUND + 10


async def test_a_quota_refusal_carries_its_figures_and_gives_back_its_rate_limit_slot(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    refusal = {
        "message": "Token quota exceeded: this request needs up to 581 tokens (at least 70 "
        "for its prompt) and 12 are left this month",
        "code": "quota_exceeded",
        "neededTokens": 581,
        "minimumTokens": 70,
        "remainingTokens": 12,
    }
    downstream.override("usage", "/usage/reserve", lambda _: httpx.Response(403, json=refusal))
    for _ in range(4):  # more than FREE_RATE_LIMIT (3): none of them counts
        refused = await chat(gateway)
        assert refused.status_code == 403
        assert refused.headers["x-ratelimit-remaining-requests"] == "3"
    body = refused.json()
    assert (body["message"], body["code"]) == (refusal["message"], "quota_exceeded")
    assert (body["neededTokens"], body["minimumTokens"], body["remainingTokens"]) == (581, 70, 12)
    del downstream.overrides[("usage", "/usage/reserve")]
    served = await chat(gateway)
    assert served.headers["x-ratelimit-remaining-requests"] == "2"


async def test_a_prompt_count_the_model_left_out_is_billed_at_the_prompts_bound(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    downstream.generation["promptTokens"] = None
    response = await chat(gateway)
    assert response.json()["tokensUsed"] == PROMPT_BOUND + 3
    settled = (await downstream.settled(1))[0]
    assert (settled["promptTokens"], settled["completionTokens"]) == (PROMPT_BOUND, 3)


async def test_usage_read_after_a_chat_includes_that_chat(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    async def slow_settle(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)
        return downstream.answer("usage", "/usage/settlements", request)

    downstream.override("usage", "/usage/settlements", slow_settle)
    assert (await chat(gateway)).status_code == 200
    assert (await gateway.get("/v1/usage", headers=KEY)).status_code == 200
    order = [c.path for c in downstream.calls if c.service == "usage"]
    assert order.index(f"/usage/{USER_ID}") > order.index("/usage/settlements")


# -- the outbox and its delivery, on their own ------------------------------------------------


@pytest.fixture
async def usage_client(downstream: Downstream) -> AsyncIterator[UsageClient]:
    wire = build_internal_client(
        base_url="http://usage.test",
        internal_token=SecretStr(TOKEN),
        timeout=3.0,
        transport=downstream.transport(),
    )
    yield UsageClient(wire)
    await wire.close()


def settlement(rid: str, status: RequestStatus, prompt: int, completion: int) -> Settlement:
    return Settlement(
        reservation_id=rid,
        request_id="req-1",
        user_id=USER_ID,
        plan=Plan.FREE,
        reserved_tokens=100,
        prompt_tokens=prompt,
        completion_tokens=completion,
        status=status,
        model="llama3",
        response_time_ms=1.0,
        started_at=datetime.now(UTC),
    )


@pytest.fixture
def parts(
    redis_client: redis.Redis, usage_client: UsageClient, recorded: Recorded
) -> tuple[SettlementOutbox, Settler, Billing]:
    outbox = SettlementOutbox(redis_client, lease_ms=100)
    metrics = recorded.metrics
    settler = Settler(usage=usage_client, outbox=outbox, claim_interval_s=60, metrics=metrics)
    billing = Billing(
        usage=usage_client, outbox=outbox, settler=settler, mark_ms=100, metrics=metrics
    )
    return outbox, settler, billing


async def test_a_settlement_outlives_the_cancellation_of_its_request(
    parts: tuple[SettlementOutbox, Settler, Billing], downstream: Downstream
) -> None:
    _, settler, billing = parts
    final = settlement("a" * 32, RequestStatus.SUCCESS, 10, 5)
    request = asyncio.create_task(billing.settle_shielded(final, required=True))
    await asyncio.sleep(0)  # the settlement's own task has started
    request.cancel()  # what a shutdown timeout does to a request (Task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await request
    await billing.drain()
    await settler.close(timeout_s=3)
    assert [(s["reservationId"], s["completionTokens"]) for s in downstream.settlements()] == [
        ("a" * 32, 5)
    ]


async def test_a_stream_whose_gateway_never_finished_is_charged_in_full_after_its_deadline(
    parts: tuple[SettlementOutbox, Settler, Billing], downstream: Downstream
) -> None:
    _, settler, billing = parts
    in_full = settlement("b" * 32, RequestStatus.INTERRUPTED, 60, 40)
    assert await billing.mark_output(in_full)
    assert await settler.claim_once() == 0  # its deadline (100 ms) has not passed
    await asyncio.sleep(0.15)
    assert await settler.claim_once() == 1
    charged = [
        (s["status"], s["promptTokens"] + s["completionTokens"]) for s in downstream.settlements()
    ]
    assert charged == [("INTERRUPTED", 100)]
    # The stream's own end, arriving after that, is told what was charged: the reservation.
    late_end = settlement("b" * 32, RequestStatus.SUCCESS, 7, 3)
    told = await billing.settle(late_end, instead_of=in_full, required=False)
    assert told == in_full
    assert len(downstream.settlements()) == 1


async def test_a_stream_that_finished_replaces_its_mark(
    parts: tuple[SettlementOutbox, Settler, Billing],
    downstream: Downstream,
    redis_client: redis.Redis,
) -> None:
    _, settler, billing = parts
    in_full = settlement("c" * 32, RequestStatus.INTERRUPTED, 60, 40)
    assert await billing.mark_output(in_full)
    end = settlement("c" * 32, RequestStatus.SUCCESS, 7, 3)
    assert await billing.settle(end, instead_of=in_full, required=False) == end
    await settler.close(timeout_s=3)
    await asyncio.sleep(0.15)  # past the mark's deadline
    assert await settler.claim_once() == 0
    assert [s["status"] for s in downstream.settlements()] == ["SUCCESS"]
    assert await redis_client.hlen(OutboxKeys().records) == 0
