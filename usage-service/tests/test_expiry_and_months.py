"""Reservations that are never settled in time, settlements that come after that, and chats that
cross a month boundary: against a real MongoDB-protocol server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from infergate_common.billing import ReservationRequest, Settlement, SettlementOutcome
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient
from usage_calls import (
    new_user,
    reservation_body,
    reserve,
    settings_for,
    settle,
    settlement_body,
    usage_of,
)
from usage_service.expiry import ReservationExpiry
from usage_service.main import create_app
from usage_service.metering import Metering
from usage_service.request_log import RequestLogRepository
from usage_service.sweeper import Sweeper, sweep_once
from usage_service.telemetry import UsageMetrics
from usage_service.usage_repository import UsageRepository

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


class Clock:
    """A wall clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def database(db_uri: str) -> AsyncIterator[Any]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(db_uri, tz_aware=True)
    yield mongo.get_default_database()
    await mongo.close()


def metering_on(database: Any, clock: Clock, *, ttl_seconds: int = 600) -> Metering:
    return Metering(
        usage=UsageRepository(database["usage"]),
        expiry=ReservationExpiry(database["usage"]),
        logs=RequestLogRepository(database["requestlogs"]),
        settings=settings_for("mongodb://unused", reservation_ttl_seconds=ttl_seconds),
        clock=clock,
    )


def reservation(user: str, tokens: int, started_at: datetime, hold: int = 60) -> ReservationRequest:
    return ReservationRequest.model_validate(
        reservation_body(user, tokens, started_at=started_at, hold_seconds=hold)
    )


def settlement_of(request: ReservationRequest, prompt: int, completion: int) -> Settlement:
    body = {"reservationId": request.reservation_id, "reservedTokens": request.tokens}
    return Settlement.model_validate(
        settlement_body(request.user_id, body, prompt, completion, started_at=request.started_at)
    )


async def test_an_unsettled_reservation_is_released_with_its_real_request_and_month(
    database: Any,
) -> None:
    start = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    clock = Clock(start)
    metering = metering_on(database, clock, ttl_seconds=30)
    request = reservation(new_user(), 400, start, hold=10)
    await metering.reserve(request)
    clock.now = start + timedelta(seconds=29)  # the longer of the two holds: 30 s
    assert await metering.release_expired() == 0
    clock.now = start + timedelta(seconds=31)
    assert await metering.release_expired() == 1
    month = await metering.usage(user_id=request.user_id, plan=None, period="2026-06")
    assert (month.reservedTokens, month.usedTokens, month.remainingTokens) == (0, 0, 1000)
    entry = await database["requestlogs"].find_one({"_id": request.reservation_id})
    assert (entry["status"], entry["requestId"], entry["period"]) == ("EXPIRED", "r-1", "2026-06")
    assert entry["createdAt"] == start
    document = await database["usage"].find_one({"userId": request.user_id})
    assert "holdUntil" not in document  # nothing open: the month leaves the sweeper's index


async def test_one_sweep_releases_every_reservation_that_is_due(database: Any) -> None:
    start = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    clock = Clock(start)
    metering = metering_on(database, clock, ttl_seconds=1)
    users = [new_user() for _ in range(250)]
    await asyncio.gather(*(metering.reserve(reservation(u, 10, start, hold=1)) for u in users))
    clock.now = start + timedelta(seconds=5)
    assert await metering.release_expired() == 250
    assert await database["usage"].count_documents({"reservedTokens": {"$ne": 0}}) == 0


async def test_a_stuck_reservation_is_found_while_newer_ones_keep_coming(database: Any) -> None:
    """The month's index is its earliest expiry, so later reservations never hide a stuck one."""
    start = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    clock = Clock(start)
    metering = metering_on(database, clock, ttl_seconds=1)
    user = new_user()
    stuck = reservation(user, 100, start, hold=2)
    await metering.reserve(stuck)
    for second in range(1, 5):  # newer chats of the same user, each held a minute
        clock.now = start + timedelta(seconds=second)
        await metering.reserve(reservation(user, 10, clock.now, hold=60))
    clock.now = start + timedelta(seconds=5)
    assert await metering.release_expired() == 1
    document = await database["usage"].find_one({"userId": user})
    assert [entry["rid"] for entry in document["expired"]] == [stuck.reservation_id]
    assert (document["reservedTokens"], len(document["open"])) == (40, 4)
    assert document["holdUntil"] == start + timedelta(seconds=1 + 60)


async def test_a_settlement_after_the_release_still_charges_exactly_once(database: Any) -> None:
    start = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    clock = Clock(start)
    metering = metering_on(database, clock, ttl_seconds=1)
    request = reservation(new_user(), 300, start, hold=1)
    await metering.reserve(request)
    clock.now = start + timedelta(seconds=5)
    assert await metering.release_expired() == 1
    late = settlement_of(request, 40, 20)
    first = await metering.settle(late)
    again = await metering.settle(late)
    assert (first.outcome, first.charged_tokens) == (SettlementOutcome.LATE, 60)
    assert (again.outcome, again.charged_tokens) == (SettlementOutcome.REPEATED, 0)
    month = await metering.usage(user_id=request.user_id, plan=None, period="2026-06")
    assert (month.usedTokens, month.reservedTokens, month.remainingTokens) == (60, 0, 940)
    entry = await database["requestlogs"].find_one({"_id": request.reservation_id})
    assert (entry["status"], entry["tokensUsed"]) == ("SUCCESS", 60)


async def test_a_chat_started_before_midnight_on_the_last_day_belongs_to_that_month(
    database: Any,
) -> None:
    started = datetime(2027, 1, 31, 23, 59, 59, 500000, tzinfo=UTC)
    clock = Clock(datetime(2027, 2, 1, 0, 0, 0, 200000, tzinfo=UTC))  # usage's clock is past it
    metering = metering_on(database, clock)
    request = reservation(new_user(), 300, started)
    granted = await metering.reserve(request)
    assert granted.reserved_tokens == 300
    clock.now = datetime(2027, 2, 1, 0, 0, 3, tzinfo=UTC)
    result = await metering.settle(settlement_of(request, 30, 12))
    assert result.outcome is SettlementOutcome.SETTLED
    january = await metering.usage(user_id=request.user_id, plan=None, period="2027-01")
    february = await metering.usage(user_id=request.user_id, plan=None, period="2027-02")
    assert (january.usedTokens, january.reservedTokens) == (42, 0)
    assert (february.usedTokens, february.reservedTokens) == (0, 0)
    entry = await database["requestlogs"].find_one({"_id": request.reservation_id})
    assert (entry["period"], entry["createdAt"]) == ("2027-01", started)


async def test_a_reservation_lives_as_long_as_its_gateway_asks(
    app_client: AppClient, db_uri: str
) -> None:
    settings = settings_for(db_uri, reservation_ttl_seconds=1, reservation_sweep_seconds=0.1)
    async with app_client(create_app(settings)) as client:
        user = new_user()
        held = (await reserve(client, user, 400, hold_seconds=30)).json()
        await asyncio.sleep(1.5)  # past RESERVATION_TTL_SECONDS, several sweeps
        assert (await usage_of(client, user))["reservedTokens"] == 400
        result = await settle(client, settlement_body(user, held, 10, 10))
        assert result["outcome"] == "settled"


class FailingOnce:
    """A metering whose first sweep fails with an error nobody expected."""

    def __init__(self) -> None:
        self.calls = 0

    async def release_expired(self) -> int:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("unexpected")
        return 2


async def test_the_sweeper_logs_a_failed_pass_and_goes_on() -> None:
    metering = FailingOnce()
    with structlog.testing.capture_logs() as logs:
        assert await sweep_once(metering) == 0
    assert [entry["event"] for entry in logs] == ["reservation_sweep_failed"]
    sweeper = Sweeper(metering, interval_s=0.01)
    sweeping = asyncio.create_task(sweeper.run())
    for _ in range(500):
        if sweeper.passes >= 2:  # passes go on after the failed one
            break
        await asyncio.sleep(0.01)
    sweeper.stop()
    await sweeping
    assert metering.calls >= 3


async def test_a_failed_sweep_is_counted_and_does_not_move_the_last_success() -> None:
    registry = CollectorRegistry()
    metrics = UsageMetrics.create(registry)
    metrics.sweeper_last_success.set(0)
    metering = FailingOnce()
    assert await sweep_once(metering, metrics) == 0
    assert (
        registry.get_sample_value("infergate_usage_sweeper_runs_total", {"outcome": "error"}) == 1
    )
    assert registry.get_sample_value("infergate_usage_sweeper_last_success_timestamp_seconds") == 0
    assert await sweep_once(metering, metrics) == 2
    assert registry.get_sample_value("infergate_usage_sweeper_runs_total", {"outcome": "ok"}) == 1
    assert registry.get_sample_value("infergate_usage_sweeper_released_total") == 2
    last = registry.get_sample_value("infergate_usage_sweeper_last_success_timestamp_seconds")
    assert last is not None
    assert time.time() - last < 5
