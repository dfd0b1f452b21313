"""A plain chat's model call starts while its tokens are reserved, for a user with room left
(EARLY_MODEL_CALL): the answer is still released only once the reservation is granted.

The order of the internal calls is what is checked: each stand-in waits for, or records, the
other, so a gateway that does not overlap them (or overlaps when it must not) fails the test,
without any timing in the assertions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from api_gateway.quota_room import QuotaRoom
from gateway_downstream import DONE, VALID_KEY, Downstream, Opener, reservation

KEY = {"x-api-key": VALID_KEY}
GUARD_S = 10.0  # how long a stand-in waits for the other before the test is failed


class Order:
    """What the stand-ins saw, in order, and a way to wait for one of them."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._changed = asyncio.Event()

    def add(self, what: str) -> None:
        self.seen.append(what)
        self._changed.set()

    async def wait_for(self, what: str) -> None:
        async with asyncio.timeout(GUARD_S):
            while what not in self.seen:
                self._changed.clear()
                await self._changed.wait()


def observe(downstream: Downstream, order: Order, *, reserve_waits_for_model: bool) -> None:
    """Record when each reservation and model call starts and ends; with
    `reserve_waits_for_model`, a reservation is answered only once the model call has begun."""

    async def reserve(request: httpx.Request) -> httpx.Response:
        order.add("reserve")
        if reserve_waits_for_model:
            await order.wait_for("generate")
        order.add("reserved")
        return downstream.answer("usage", "/usage/reserve", request)

    async def generate(request: httpx.Request) -> httpx.Response:
        order.add("generate")
        return downstream.answer("ai", "/ai/generate", request)

    downstream.override("usage", "/usage/reserve", reserve)
    downstream.override("ai", "/ai/generate", generate)


@pytest.fixture
async def gateway(open_gateway: Opener) -> AsyncIterator[httpx.AsyncClient]:
    async with open_gateway(settlement_batch_ms=0) as client:  # each settlement sent at once
        yield client


async def chat(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/chat", json={"prompt": "Hello", **body}, headers=KEY)


async def test_a_user_with_room_has_the_model_called_while_the_tokens_are_reserved(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    order = Order()
    observe(downstream, order, reserve_waits_for_model=False)
    first = await chat(gateway)  # nothing known of the user's month yet: one after the other
    assert first.status_code == 200
    assert order.seen == ["reserve", "reserved", "generate"]

    order.seen.clear()
    observe(downstream, order, reserve_waits_for_model=True)
    second = await chat(gateway)
    assert second.status_code == 200, second.text
    assert second.json() == {"output": "Hi!", "tokensUsed": 12}
    assert order.seen == ["reserve", "generate", "reserved"]
    settled = await downstream.settled(2)
    assert [(s["status"], s["promptTokens"], s["completionTokens"]) for s in settled] == [
        ("SUCCESS", 9, 3),
        ("SUCCESS", 9, 3),
    ]


async def test_a_refused_reservation_cancels_the_early_call_and_answers_403(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    assert (await chat(gateway)).status_code == 200  # the user's month is known: room left
    order = Order()

    async def refuse(request: httpx.Request) -> httpx.Response:
        await order.wait_for("generate")
        body = {"message": "Token quota exceeded", "code": "quota_exceeded"}
        return httpx.Response(403, json=body)

    async def generate_forever(request: httpx.Request) -> httpx.Response:
        order.add("generate")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            order.add("cancelled")
            raise
        raise AssertionError("unreachable")

    downstream.override("usage", "/usage/reserve", refuse)
    downstream.override("ai", "/ai/generate", generate_forever)
    response = await chat(gateway)
    assert response.status_code == 403
    assert response.json()["code"] == "quota_exceeded"
    await order.wait_for("cancelled")  # the model call did not outlive the refusal
    # Nothing was charged for it: the only settlement sent is the first chat's.
    first_reservation = downstream.bodies("usage", "/usage/reserve")[0]["reservationId"]
    assert [s["reservationId"] for s in await downstream.settled(1)] == [first_reservation]

    # Refused: the next chat waits for its reservation before the model is called.
    order.seen.clear()
    observe(downstream, order, reserve_waits_for_model=False)
    assert (await chat(gateway)).status_code == 200
    assert order.seen == ["reserve", "reserved", "generate"]


async def test_a_user_short_of_room_waits_for_the_reservation(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    def little_left(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        # Twice the chat's worst case left: under the default margin of four.
        return reservation(body, remaining=2 * body["tokens"])

    downstream.override("usage", "/usage/reserve", little_left)
    assert (await chat(gateway)).status_code == 200
    order = Order()
    observe(downstream, order, reserve_waits_for_model=False)
    assert (await chat(gateway)).status_code == 200
    assert order.seen == ["reserve", "reserved", "generate"]


async def test_early_calls_can_be_turned_off(open_gateway: Opener, downstream: Downstream) -> None:
    async with open_gateway(early_model_call=False) as gateway:
        assert (await chat(gateway)).status_code == 200
        order = Order()
        observe(downstream, order, reserve_waits_for_model=False)
        assert (await chat(gateway)).status_code == 200
        assert order.seen == ["reserve", "reserved", "generate"]


async def test_a_stream_waits_for_its_reservation(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    assert (await chat(gateway)).status_code == 200  # room known
    order = Order()
    observe(downstream, order, reserve_waits_for_model=False)

    async def stream(request: httpx.Request) -> httpx.Response:
        order.add("generate")
        lines = [{"type": "delta", "content": "Hi"}, DONE]
        return httpx.Response(200, content="".join(json.dumps(x) + "\n" for x in lines))

    downstream.override("ai", "/ai/generate", stream)
    response = await chat(gateway, stream=True)
    assert response.status_code == 200
    assert '"done"' in response.text
    assert order.seen == ["reserve", "reserved", "generate"]


async def test_a_reservation_short_of_the_worst_case_calls_the_model_again_capped(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    assert (await chat(gateway)).status_code == 200  # room known
    order = Order()
    calls: list[int] = []

    async def short(request: httpx.Request) -> httpx.Response:
        await order.wait_for("generate")
        body = json.loads(request.content)
        # Ten tokens of output left.
        return reservation(body, reserved=body["minTokens"] + 10, remaining=0)

    async def generate(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content)["maxTokens"])
        order.add("generate")
        if len(calls) == 1:  # the early call, asked for the full output: never answered
            await asyncio.Event().wait()
        return downstream.answer("ai", "/ai/generate", request)

    downstream.override("usage", "/usage/reserve", short)
    downstream.override("ai", "/ai/generate", generate)
    response = await chat(gateway)
    assert response.status_code == 200, response.text
    assert calls == [512, 11]  # the full output first, then what the reservation covers


def test_quota_room_is_a_recent_and_bounded_hint() -> None:
    now = [0.0]
    room = QuotaRoom(max_age_s=30, max_users=2, clock=lambda: now[0])
    assert not room.covers("a", 1)  # never seen
    room.saw("a", 1000)
    assert room.covers("a", 1000)
    assert not room.covers("a", 1001)
    now[0] = 31.0
    assert not room.covers("a", 1)  # too old to go by
    room.saw("a", 10)
    room.saw("b", 10)
    room.saw("c", 10)  # over the bound: the least recently seen drops out
    assert not room.covers("a", 1)
    assert room.covers("b", 10)
    assert room.covers("c", 10)
    room.forget("b")
    assert not room.covers("b", 1)
