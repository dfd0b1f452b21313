"""usage-service plan changes (the month's limit and remainder move together) and the paginated
request history, against a real MongoDB-protocol server."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from usage_calls import HEADERS, new_user, reserve, settle, settlement_body
from usage_service.cursors import decode_cursor, encode_cursor


async def set_plan(client: httpx.AsyncClient, user: str, plan: str) -> dict[str, Any]:
    response = await client.put(f"/usage/{user}/plan", json={"plan": plan}, headers=HEADERS)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def settle_100(client: httpx.AsyncClient, user: str, reservation: dict[str, Any]) -> None:
    """Charge 100 tokens of the reservation."""
    await settle(client, settlement_body(user, reservation, 100, 0))


async def test_upgrade_moves_the_limit_and_the_remainder_by_the_difference(
    client: httpx.AsyncClient,
) -> None:
    user = new_user()
    held = (await reserve(client, user, 300)).json()
    await settle_100(client, user, held)  # 100 used
    await reserve(client, user, 200)  # 200 reserved, still open
    assert (await reserve(client, user, 800)).status_code == 403
    usage = await set_plan(client, user, "PRO")
    assert (usage["monthlyTokenLimit"], usage["usedTokens"], usage["reservedTokens"]) == (
        20000,
        100,
        200,
    )
    assert usage["remainingTokens"] == 20000 - 100 - 200
    assert (await reserve(client, user, 800)).status_code == 201


async def test_downgrade_can_leave_nothing_to_reserve(client: httpx.AsyncClient) -> None:
    user = new_user()
    await set_plan(client, user, "PRO")
    held = (await reserve(client, user, 5000, plan="PRO")).json()
    await settle_100(client, user, held)
    usage = await set_plan(client, user, "FREE")
    assert (usage["monthlyTokenLimit"], usage["remainingTokens"]) == (1000, 1000 - 100 - 0)
    assert usage["usedTokens"] == 100


async def test_a_plan_change_before_any_use_creates_the_month(client: httpx.AsyncClient) -> None:
    user = new_user()
    usage = await set_plan(client, user, "PRO")
    assert (usage["monthlyTokenLimit"], usage["remainingTokens"], usage["usedTokens"]) == (
        20000,
        20000,
        0,
    )
    # A reservation sent with a stale plan does not undo it.
    assert (await reserve(client, user, 5000, plan="FREE")).status_code == 201


async def test_setting_the_same_plan_twice_changes_nothing(client: httpx.AsyncClient) -> None:
    user = new_user()
    await reserve(client, user, 100)
    first = await set_plan(client, user, "PRO")
    assert await set_plan(client, user, "PRO") == first


async def test_plan_changes_racing_reservations_keep_the_books_balanced(
    client: httpx.AsyncClient,
) -> None:
    user = new_user()
    await reserve(client, user, 10)
    calls = [reserve(client, user, 70) for _ in range(30)]
    calls += [
        client.put(f"/usage/{user}/plan", json={"plan": plan}, headers=HEADERS)
        for plan in ("PRO", "FREE", "PRO", "FREE", "PRO")
    ]
    results = await asyncio.gather(*calls)
    assert all(r.status_code in {200, 201, 403} for r in results)
    granted = sum(1 for r in results[:30] if r.status_code == 201)
    usage = (await client.get(f"/usage/{user}", headers=HEADERS)).json()
    assert usage["monthlyTokenLimit"] in {1000, 20000}  # whichever change landed last
    assert usage["reservedTokens"] == 10 + 70 * granted
    assert usage["remainingTokens"] == usage["monthlyTokenLimit"] - 10 - 70 * granted
    usage = await set_plan(client, user, "PRO")
    assert usage["remainingTokens"] == 20000 - 10 - 70 * granted


async def write_logs(db: Any, user: str, count: int, *, same_ms: int = 0) -> list[str]:
    """`count` entries a millisecond apart (the last `same_ms` sharing one time); newest first."""
    base = datetime(2026, 3, 1, tzinfo=UTC)
    docs: list[dict[str, Any]] = []
    for i in range(count):
        at = base + timedelta(milliseconds=min(i, count - same_ms))
        docs.append(
            {
                "_id": uuid.uuid4().hex,
                "requestId": f"req-{i}",
                "userId": user,
                "model": "m",
                "promptTokens": i,
                "completionTokens": 1,
                "tokensUsed": i + 1,
                "responseTimeMs": 2.5,
                "status": "SUCCESS",
                "createdAt": at,
            }
        )
    await db["requestlogs"].insert_many(docs)
    ordered = sorted(docs, key=lambda d: (d["createdAt"], d["_id"]), reverse=True)
    return [str(d["requestId"]) for d in ordered]


async def history(client: httpx.AsyncClient, user: str, **params: Any) -> httpx.Response:
    return await client.get(f"/usage/{user}/requests", params=params, headers=HEADERS)


@pytest.mark.parametrize("same_ms", [0, 6])
async def test_history_pages_through_every_entry_once_newest_first(
    client: httpx.AsyncClient, db: Any, same_ms: int
) -> None:
    user = new_user()
    expected = await write_logs(db, user, 11, same_ms=same_ms)
    await write_logs(db, new_user(), 3)  # someone else's
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 4, **({"before": cursor} if cursor else {})}
        response = await history(client, user, **params)
        assert response.status_code == 200
        page = response.json()
        seen += [item["requestId"] for item in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == expected
    assert len(page["data"]) == 3


async def test_history_items_hold_no_prompt_and_a_full_last_page_has_no_cursor(
    client: httpx.AsyncClient, db: Any
) -> None:
    user = new_user()
    await write_logs(db, user, 2)
    page = (await history(client, user, limit=2)).json()
    assert page["nextCursor"] is None
    assert set(page["data"][0]) == {
        "requestId",
        "model",
        "status",
        "period",
        "promptTokens",
        "completionTokens",
        "tokensUsed",
        "responseTimeMs",
        "createdAt",
    }
    assert (await history(client, new_user())).json() == {"data": [], "nextCursor": None}


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": "x"},
        {"before": "not-a-cursor"},
        {"before": "bm9wZQ"},
        {"before": encode_cursor(datetime.now(UTC), "x") + "$"},
        {"before": "OTk5OTk5OTk5OTk5OTk5OmFiYw"},  # a time past year 9999
    ],
)
async def test_history_rejects_invalid_queries_with_400(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    assert (await history(client, new_user(), **params)).status_code == 400


def test_cursors_round_trip_to_the_millisecond() -> None:
    moment = datetime(2026, 5, 17, 8, 30, 1, 123000, tzinfo=UTC)
    assert decode_cursor(encode_cursor(moment, "abc123")) == (moment, "abc123")


@pytest.mark.parametrize(
    ("path", "body"),
    [("/usage/not-a-user/plan", {"plan": "PRO"}), ("/usage/" + "a" * 24 + "/plan", {"plan": "X"})],
)
async def test_plan_change_rejects_invalid_input_with_400(
    client: httpx.AsyncClient, path: str, body: Any
) -> None:
    assert (await client.put(path, json=body, headers=HEADERS)).status_code == 400
