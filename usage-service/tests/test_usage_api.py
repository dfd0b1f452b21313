"""usage-service against a real MongoDB-protocol server: reservations, settling, quotas."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from usage_calls import (
    HEADERS,
    new_user,
    reservation_body,
    reserve,
    settle,
    settlement_body,
    usage_of,
)
from usage_service.periods import current_period


async def test_a_new_user_has_the_full_monthly_quota(client: httpx.AsyncClient) -> None:
    usage = await usage_of(client, new_user())
    assert usage["usedTokens"] == 0
    assert usage["monthlyTokenLimit"] == 1000
    assert usage["period"] == current_period()


async def test_settle_charges_the_actual_tokens_and_frees_the_rest(
    client: httpx.AsyncClient, db: Any
) -> None:
    user = new_user()
    reservation = (await reserve(client, user, 300)).json()
    assert (await usage_of(client, user))["reservedTokens"] == 300
    body = {**settlement_body(user, reservation, 20, 30), "backend": "gpu-a"}
    result = await settle(client, body)
    assert (result["outcome"], result["chargedTokens"]) == ("settled", 50)
    usage = await usage_of(client, user)
    assert (usage["usedTokens"], usage["reservedTokens"], usage["remainingTokens"]) == (50, 0, 950)
    logs = await db["requestlogs"].find({"userId": user}).to_list()
    assert [(log["status"], log["tokensUsed"], log["period"]) for log in logs] == [
        ("SUCCESS", 50, current_period())
    ]
    assert logs[0]["backend"] == "gpu-a"  # the model backend that answered, for operators
    assert "prompt" not in logs[0]


async def test_settling_twice_charges_and_logs_once(client: httpx.AsyncClient, db: Any) -> None:
    user = new_user()
    reservation = (await reserve(client, user, 100)).json()
    body = settlement_body(user, reservation, 10, 10)
    results = await asyncio.gather(*(settle(client, body) for _ in range(5)))
    assert sorted(r["outcome"] for r in results) == ["repeated"] * 4 + ["settled"]
    assert (await usage_of(client, user))["usedTokens"] == 20
    assert await db["requestlogs"].count_documents({"userId": user}) == 1


async def test_a_batch_of_settlements_answers_each_in_order(client: httpx.AsyncClient) -> None:
    user = new_user()
    first, second = [(await reserve(client, user, 100)).json() for _ in range(2)]
    batch = [
        settlement_body(user, first, 5, 5),
        settlement_body(user, second, 7, 0),
        settlement_body(user, first, 5, 5),  # the same again
    ]
    response = await client.post("/usage/settlements", json={"settlements": batch}, headers=HEADERS)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["reservationId"] for r in results] == [
        first["reservationId"],
        second["reservationId"],
        first["reservationId"],
    ]
    assert sorted(r["outcome"] for r in results) == ["repeated", "settled", "settled"]
    assert (await usage_of(client, user))["usedTokens"] == 17


async def test_a_reservation_is_held_once_whatever_the_repeats(client: httpx.AsyncClient) -> None:
    user = new_user()
    body = reservation_body(user, 300)
    answers = await asyncio.gather(
        *(client.post("/usage/reserve", json=body, headers=HEADERS) for _ in range(4))
    )
    assert {a.status_code for a in answers} == {201}
    assert {a.json()["reservationId"] for a in answers} == {body["reservationId"]}
    usage = await usage_of(client, user)
    assert (usage["reservedTokens"], usage["remainingTokens"]) == (300, 700)


async def test_a_month_short_of_the_worst_case_holds_what_is_left(
    client: httpx.AsyncClient,
) -> None:
    user = new_user()
    assert (await reserve(client, user, 900)).status_code == 201
    partial = await reserve(client, user, 500, minimum=60)
    assert partial.status_code == 201
    assert (partial.json()["reservedTokens"], partial.json()["remainingTokens"]) == (100, 0)
    usage = await usage_of(client, user)
    assert (usage["reservedTokens"], usage["remainingTokens"]) == (1000, 0)


async def test_a_refusal_says_what_the_request_needed_and_what_is_left(
    client: httpx.AsyncClient, db: Any
) -> None:
    user = new_user()
    assert (await reserve(client, user, 960)).status_code == 201
    refused = await reserve(client, user, 500, minimum=41)
    assert refused.status_code == 403
    body = refused.json()
    assert body["code"] == "quota_exceeded"
    assert (body["neededTokens"], body["minimumTokens"], body["remainingTokens"]) == (500, 41, 40)
    assert body["message"] == (
        "Token quota exceeded: this request needs up to 500 tokens (at least 41 for its "
        "prompt) and 40 are left this month"
    )
    logs = await db["requestlogs"].find({"userId": user}).to_list()
    assert [log["status"] for log in logs] == ["QUOTA_EXCEEDED"]
    assert (await usage_of(client, user))["reservedTokens"] == 960


async def test_concurrent_reservations_never_overshoot_the_limit(client: httpx.AsyncClient) -> None:
    user = new_user()
    results = await asyncio.gather(*(reserve(client, user, 70) for _ in range(50)))
    granted = [r for r in results if r.status_code == 201]
    assert len(granted) == 1000 // 70
    assert {r.status_code for r in results} == {201, 403}
    usage = await usage_of(client, user)
    assert usage["reservedTokens"] == 70 * len(granted)
    assert usage["remainingTokens"] == 1000 - 70 * len(granted)


async def test_last_months_usage_does_not_count_this_month(
    client: httpx.AsyncClient, db: Any
) -> None:
    user = new_user()
    await db["usage"].insert_one(
        {
            "_id": f"{user}:2000-01",
            "userId": user,
            "period": "2000-01",
            "monthlyTokenLimit": 1000,
            "usedTokens": 1000,
            "reservedTokens": 0,
            "remainingTokens": 0,
            "open": [],
        }
    )
    assert (await reserve(client, user, 500)).status_code == 201
    assert (await usage_of(client, user))["usedTokens"] == 0


async def test_a_release_that_arrives_first_bars_the_reservation(
    client: httpx.AsyncClient, db: Any
) -> None:
    """The gateway gave up waiting for a reservation and released it; the reservation itself
    arrives afterwards and must hold nothing."""
    user = new_user()
    body = reservation_body(user, 400)
    reservation = {"reservationId": body["reservationId"], "reservedTokens": body["tokens"]}
    release = settlement_body(user, reservation, 0, 0, status="TIMEOUT")
    assert (await settle(client, release))["outcome"] == "voided"
    late = await client.post("/usage/reserve", json=body, headers=HEADERS)
    assert late.status_code == 409
    assert late.json()["code"] == "reservation_void"
    usage = await usage_of(client, user)
    assert (usage["reservedTokens"], usage["remainingTokens"]) == (0, 1000)
    logs = await db["requestlogs"].find({"userId": user}).to_list()
    assert [(log["status"], log["tokensUsed"]) for log in logs] == [("TIMEOUT", 0)]


async def test_a_release_after_the_reservation_frees_it(client: httpx.AsyncClient) -> None:
    user = new_user()
    reservation = (await reserve(client, user, 400)).json()
    release = settlement_body(user, reservation, 0, 0, status="TIMEOUT")
    assert (await settle(client, release))["outcome"] == "settled"
    usage = await usage_of(client, user)
    assert (usage["usedTokens"], usage["reservedTokens"], usage["remainingTokens"]) == (0, 0, 1000)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/usage/reserve", {**reservation_body("a" * 24, 5), "tokens": -5}),
        ("/usage/reserve", {**reservation_body("a" * 24, 5), "tokens": 0}),
        ("/usage/reserve", {**reservation_body("a" * 24, 5), "userId": {"$ne": None}}),
        ("/usage/reserve", {**reservation_body("a" * 24, 5), "plan": "GOLD"}),
        ("/usage/reserve", {**reservation_body("a" * 24, 5), "tokens": 1.5}),
        ("/usage/reserve", {**reservation_body("a" * 24, 5), "minTokens": 6}),
        ("/usage/reserve", {**reservation_body("a" * 24, 5), "reservationId": "x"}),
        ("/usage/reserve", {**reservation_body("a" * 24, 5), "startedAt": "2026-01-01T00:00:00"}),
        ("/usage/reserve", {**reservation_body("a" * 24, 5), "holdSeconds": 0}),
        ("/usage/settle", {"reservationId": {"$gt": ""}}),
        ("/usage/settlements", {"settlements": []}),
    ],
)
async def test_invalid_bodies_are_400(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    response = await client.post(path, json=body, headers=HEADERS)
    assert response.status_code == 400


async def test_a_chat_that_did_not_start_about_now_is_refused(client: httpx.AsyncClient) -> None:
    body = reservation_body(new_user(), 5)
    body["startedAt"] = "2020-01-31T23:59:59+00:00"
    response = await client.post("/usage/reserve", json=body, headers=HEADERS)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_start"


async def test_routes_refuse_calls_without_the_internal_token(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/usage/{new_user()}")
    assert response.status_code == 401
