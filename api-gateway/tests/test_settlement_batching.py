"""Settlements wait up to SETTLEMENT_BATCH_MS for others, so a quiet gateway delivers several
chats in one call to usage-service; a reader of the user's usage, and a shutdown, do not wait."""

from __future__ import annotations

import json

import httpx
from gateway_downstream import VALID_KEY, Downstream, Opener, reservation

KEY = {"x-api-key": VALID_KEY}
LINGER_MS = 1_000  # far longer than three chats take here


async def chat(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat", json={"prompt": "Hello"}, headers=KEY)
    assert response.status_code == 200, response.text


async def test_chats_within_the_linger_are_settled_in_one_call(
    open_gateway: Opener, downstream: Downstream
) -> None:
    async with open_gateway(settlement_batch_ms=LINGER_MS) as gateway:
        for _ in range(3):
            await chat(gateway)
        settled = await downstream.settled(3)
    assert len(downstream.bodies("usage", "/usage/settlements")) == 1
    assert [s["status"] for s in settled] == ["SUCCESS"] * 3
    reserved = [r["reservationId"] for r in downstream.bodies("usage", "/usage/reserve")]
    assert [s["reservationId"] for s in settled] == reserved


async def test_without_a_linger_each_chat_is_settled_on_its_own(
    open_gateway: Opener, downstream: Downstream
) -> None:
    async with open_gateway(settlement_batch_ms=0) as gateway:
        for _ in range(3):
            await chat(gateway)
            await downstream.settled(len(downstream.bodies("usage", "/usage/reserve")))
    assert len(downstream.bodies("usage", "/usage/settlements")) == 3


async def test_a_read_of_the_users_usage_has_their_settlements_sent_at_once(
    open_gateway: Opener, downstream: Downstream
) -> None:
    # The read waits for the user's settlements at most USAGE_TIMEOUT, half the linger: were
    # they not sent at once, the month would be read before the chat's settlement arrived.
    async with open_gateway(settlement_batch_ms=LINGER_MS, usage_timeout=LINGER_MS / 2000) as gw:
        await chat(gw)
        response = await gw.get("/v1/usage", headers=KEY)
        assert response.status_code == 200
    calls = [c.path for c in downstream.calls if c.service == "usage"]
    assert calls.index("/usage/settlements") < calls.index(f"/usage/{'a' * 24}")


async def test_a_gateway_shutting_down_sends_what_lingers(
    open_gateway: Opener, downstream: Downstream
) -> None:
    async with open_gateway(settlement_batch_ms=LINGER_MS) as gateway:
        await chat(gateway)
        assert downstream.settlements() == []  # still lingering
    # The app's shutdown delivered it: no claim by another gateway was needed.
    assert [s["status"] for s in downstream.settlements()] == ["SUCCESS"]


async def test_a_user_near_the_quota_has_the_last_chat_settled_before_reserving(
    open_gateway: Opener, downstream: Downstream
) -> None:
    def little_left(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        # Room for one more chat, not four.
        return reservation(body, remaining=body["tokens"])

    downstream.override("usage", "/usage/reserve", little_left)
    async with open_gateway(settlement_batch_ms=LINGER_MS) as gateway:
        await chat(gateway)
        await chat(gateway)
    calls = [c.path for c in downstream.calls if c.service == "usage"]
    assert calls[:3] == ["/usage/reserve", "/usage/settlements", "/usage/reserve"]


async def test_a_user_with_room_does_not_wait_for_the_last_chats_settlement(
    open_gateway: Opener, downstream: Downstream
) -> None:
    async with open_gateway(settlement_batch_ms=LINGER_MS) as gateway:
        await chat(gateway)
        await chat(gateway)
        calls = [c.path for c in downstream.calls if c.service == "usage"]
    assert calls[:2] == ["/usage/reserve", "/usage/reserve"]
