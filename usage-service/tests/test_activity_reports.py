"""usage-service's reports against a real MongoDB-protocol server: per-day usage aggregated from
the request log (one user's and everyone's), and the month's top users from the ledger."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from infergate_common.billing import RequestStatus
from usage_calls import HEADERS, new_user, reserve, settle, settlement_body
from usage_service.documents import log_fields
from usage_service.periods import current_period
from usage_service.schemas import RequestLogEntry

FEBRUARY = "2026-02"  # a past month of 28 days


async def log(
    db: Any,
    user: str,
    at: datetime,
    *,
    status: RequestStatus = RequestStatus.SUCCESS,
    tokens: int = 0,
) -> None:
    """One request-log entry, in the shape the service writes."""
    entry = RequestLogEntry(
        request_id=uuid.uuid4().hex,
        user_id=user,
        period=f"{at.year:04d}-{at.month:02d}",
        model="m",
        tokens_used=tokens,
        status=status,
        created_at=at,
    )
    await db["requestlogs"].insert_one({"_id": uuid.uuid4().hex, **log_fields(entry)})


def feb(day: int, hour: int = 12, **later: float) -> datetime:
    return datetime(2026, 2, day, hour, tzinfo=UTC) + timedelta(**later)


async def daily(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await client.get(path, params=params, headers=HEADERS)
    assert response.status_code == 200, response.text
    return dict(response.json())


def nonzero(body: dict[str, Any]) -> dict[str, tuple[int, int, int, int]]:
    return {
        d["date"]: (d["requests"], d["tokens"], d["errors"], d["refused"])
        for d in body["days"]
        if d["requests"]
    }


async def test_a_users_days_count_requests_tokens_errors_and_refusals_by_utc_day(
    client: httpx.AsyncClient, db: Any
) -> None:
    user, other = new_user(), new_user()
    await log(db, user, feb(1, 0), tokens=12)
    await log(db, user, feb(1, 23), status=RequestStatus.UPSTREAM_ERROR)
    await log(db, user, feb(1, 23), status=RequestStatus.RATE_LIMITED)
    await log(db, user, feb(3, 23, minutes=59, seconds=59.999), tokens=30)  # still the 3rd
    await log(db, user, feb(4, 0), status=RequestStatus.QUOTA_EXCEEDED)
    await log(db, user, feb(4, 1), status=RequestStatus.EXPIRED)
    await log(db, user, feb(4, 2), status=RequestStatus.CANCELLED, tokens=4)
    await log(db, user, feb(28, 23), status=RequestStatus.INTERRUPTED, tokens=100)
    await log(db, user, feb(28, 23), status=RequestStatus.TIMEOUT)
    await log(db, user, datetime(2026, 3, 1, tzinfo=UTC), tokens=999)  # March
    await log(db, other, feb(1), tokens=500)
    body = await daily(client, f"/usage/{user}/daily", period=FEBRUARY)
    assert body["period"] == FEBRUARY
    assert [d["date"] for d in body["days"]] == [
        (date(2026, 2, 1) + timedelta(days=n)).isoformat() for n in range(28)
    ]
    assert nonzero(body) == {
        "2026-02-01": (3, 12, 1, 1),
        "2026-02-03": (1, 30, 0, 0),
        "2026-02-04": (3, 4, 1, 1),
        "2026-02-28": (2, 100, 2, 0),
    }
    assert body["days"][1] == {
        "date": "2026-02-02",
        "requests": 0,
        "tokens": 0,
        "errors": 0,
        "refused": 0,
    }


async def test_everyones_days_add_up_every_users_entries(
    client: httpx.AsyncClient, db: Any
) -> None:
    # The database is the test's own: only these entries are in it.
    first, second = new_user(), new_user()
    await log(db, first, feb(10), tokens=7)
    await log(db, second, feb(10), tokens=5, status=RequestStatus.TIMEOUT)
    await log(db, second, feb(11), status=RequestStatus.RATE_LIMITED)
    await log(db, first, datetime(2026, 1, 31, 23, tzinfo=UTC), tokens=50)  # January
    body = await daily(client, "/usage/daily", period=FEBRUARY)
    assert len(body["days"]) == 28
    assert nonzero(body) == {"2026-02-10": (2, 12, 1, 0), "2026-02-11": (1, 0, 0, 1)}


async def test_this_month_runs_up_to_today_and_shows_a_settled_chat(
    client: httpx.AsyncClient,
) -> None:
    user = new_user()
    held = (await reserve(client, user, 100)).json()
    await settle(client, settlement_body(user, held, 20, 5))
    body = await daily(client, f"/usage/{user}/daily")  # this month by default
    today = datetime.now(UTC).date()
    assert body["period"] == current_period()
    assert [d["date"] for d in body["days"]][-1] == today.isoformat()
    assert len(body["days"]) == today.day
    assert nonzero(body) == {today.isoformat(): (1, 25, 0, 0)}


async def test_a_future_month_has_no_days_yet(client: httpx.AsyncClient) -> None:
    body = await daily(client, f"/usage/{new_user()}/daily", period="9999-12")
    assert body == {"period": "9999-12", "days": []}


@pytest.mark.parametrize(
    "period", ["2026-13", "2026-00", "2026-1", "26-01", "2026-01-01", "1969-12", "abcd-ef", ""]
)
@pytest.mark.parametrize("path", [f"/usage/{'a' * 24}/daily", "/usage/daily", "/usage/top"])
async def test_a_malformed_period_is_refused_with_a_readable_400(
    client: httpx.AsyncClient, path: str, period: str
) -> None:
    response = await client.get(path, params={"period": period}, headers=HEADERS)
    assert response.status_code == 400, response.text
    assert "YYYY-MM" in response.json()["message"]


@pytest.mark.parametrize("path", ["/usage/daily", "/usage/top", f"/usage/{'a' * 24}/daily"])
async def test_the_reports_need_the_internal_token(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 401


async def charge(client: httpx.AsyncClient, user: str, tokens: int) -> None:
    held = (await reserve(client, user, tokens)).json()
    await settle(client, settlement_body(user, held, tokens, 0))


async def test_top_users_rank_by_the_ledgers_tokens_with_their_request_counts(
    client: httpx.AsyncClient,
) -> None:
    light, heavy, middle, idle = (new_user() for _ in range(4))
    await charge(client, light, 10)
    for _ in range(3):
        await charge(client, heavy, 100)
    await charge(client, middle, 150)
    await client.post(  # a rate-limited attempt: a request, no tokens
        "/usage/attempts",
        json={
            "requestId": "r-1",
            "userId": middle,
            "status": "RATE_LIMITED",
            "model": "m",
            "responseTimeMs": 1.0,
            "startedAt": datetime.now(UTC).isoformat(),
        },
        headers=HEADERS,
    )
    put = await client.put(f"/usage/{idle}/plan", json={"plan": "PRO"}, headers=HEADERS)
    assert put.status_code == 200  # a month document with nothing used: not ranked
    response = await client.get("/usage/top", params={"limit": 10}, headers=HEADERS)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "period": current_period(),
        "data": [
            {"userId": heavy, "tokens": 300, "requests": 3},
            {"userId": middle, "tokens": 150, "requests": 2},
            {"userId": light, "tokens": 10, "requests": 1},
        ],
    }
    first_two = await client.get("/usage/top", params={"limit": 2}, headers=HEADERS)
    assert [u["userId"] for u in first_two.json()["data"]] == [heavy, middle]
    past = await client.get("/usage/top", params={"period": FEBRUARY}, headers=HEADERS)
    assert past.json() == {"period": FEBRUARY, "data": []}


@pytest.mark.parametrize("limit", [0, 101, -1])
async def test_top_users_limit_is_1_to_100(client: httpx.AsyncClient, limit: int) -> None:
    response = await client.get("/usage/top", params={"limit": limit}, headers=HEADERS)
    assert response.status_code == 400


@pytest.mark.parametrize("match", [{"period": FEBRUARY}, {"period": FEBRUARY, "userId": "u"}])
async def test_the_days_match_is_served_by_the_period_user_index(
    client: httpx.AsyncClient, db: Any, match: dict[str, str]
) -> None:
    await log(db, new_user(), feb(1))  # the app (and its indexes) is up: `client` started it
    plan = await db.command(
        "explain",
        {"aggregate": "requestlogs", "pipeline": [{"$match": match}], "cursor": {}},
        verbosity="queryPlanner",
    )
    winning = plan["stages"][0]["$cursor"]["queryPlanner"]["winningPlan"]
    assert winning["inputStage"]["indexName"] == "period_user", winning
