"""Reservations on a real MongoDB-protocol server: the compare-and-set on the figures last seen
saves the read-back, and stale figures never give a wrong answer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from infergate_devstack.components.datastores import mongo_uri
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from usage_service.documents import Hold
from usage_service.periods import usage_key
from usage_service.quota_hints import Quota
from usage_service.usage_repository import Granted, UsageRepository

LIMIT = 1000
PERIOD = "2026-11"
Document = dict[str, Any]


class Commands(monitoring.CommandListener):
    """The commands the client sent (names only)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def commands() -> Commands:
    return Commands()


@pytest.fixture
async def usage(mongo_port: int, commands: Commands) -> AsyncIterator[AsyncCollection[Document]]:
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(
        mongo_uri(mongo_port, f"hints-{uuid.uuid4().hex[:8]}"), event_listeners=[commands]
    )
    yield mongo.get_default_database()["usage"]
    await mongo.close()


def replica(usage: AsyncCollection[Document]) -> UsageRepository:
    """A repository as one usage-service process holds it (each has its own hints)."""
    return UsageRepository(usage)


def hold(tokens: int, user: str = "u1", rid: str | None = None) -> Hold:
    return Hold(
        key=usage_key(user, PERIOD),
        user_id=user,
        period=PERIOD,
        reservation_id=rid or uuid.uuid4().hex,
        tokens=tokens,
        min_tokens=tokens,
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
        request_id="r-1",
        model="m",
        started_at=datetime.now(UTC),
    )


async def reserve(repository: UsageRepository, tokens: int, user: str = "u1") -> Quota | None:
    """The month after the reservation, or None when it was refused."""
    outcome = await repository.reserve(hold(tokens, user), limit=LIMIT)
    return outcome.quota if isinstance(outcome, Granted) else None


async def stored(usage: AsyncCollection[Document], user: str = "u1") -> Document:
    document = await usage.find_one({"_id": f"{user}:{PERIOD}"})
    assert document is not None
    return document


async def test_a_second_reservation_is_one_update_and_reports_exact_figures(
    usage: AsyncCollection[Document], commands: Commands
) -> None:
    repository = replica(usage)
    assert await reserve(repository, 100) == Quota(LIMIT, 900)
    commands.names.clear()
    assert await reserve(repository, 50) == Quota(LIMIT, 850)
    assert commands.names == ["update"]  # no read-back
    assert (await stored(usage))["remainingTokens"] == 850


async def test_figures_changed_elsewhere_are_detected_and_the_answer_stays_exact(
    usage: AsyncCollection[Document], commands: Commands
) -> None:
    first, second = replica(usage), replica(usage)
    assert await reserve(first, 100) == Quota(LIMIT, 900)
    assert await reserve(second, 200) == Quota(LIMIT, 700)  # first's figures are now stale
    commands.names.clear()
    assert await reserve(first, 50) == Quota(LIMIT, 650)
    assert commands.names == ["update", "update", "find"]  # refused compare-and-set, then read
    assert (await stored(usage))["remainingTokens"] == 650


async def test_a_settlement_moves_the_figures_so_the_next_reservation_needs_no_read(
    usage: AsyncCollection[Document], commands: Commands
) -> None:
    repository = replica(usage)
    rid = uuid.uuid4().hex
    await repository.reserve(hold(300, rid=rid), limit=LIMIT)
    settled = await repository.settle(
        key=usage_key("u1", PERIOD), reservation_id=rid, reserved=300, charge=120
    )
    assert settled
    commands.names.clear()
    assert await reserve(repository, 10) == Quota(LIMIT, LIMIT - 120 - 10)
    assert commands.names == ["update"]


async def test_a_reservation_arriving_while_a_settlement_is_written_needs_no_read(
    usage: AsyncCollection[Document], commands: Commands
) -> None:
    """The settlement of a user's last chat is often still being written when their next chat
    reserves (at c=1 the two meet on every other chat): the reservation's compare-and-set must
    expect the figures as that settlement leaves them, not read them back."""
    repository = replica(usage)
    rid = uuid.uuid4().hex
    await repository.reserve(hold(300, rid=rid), limit=LIMIT)
    commands.names.clear()
    settled, quota = await asyncio.gather(
        repository.settle(
            key=usage_key("u1", PERIOD), reservation_id=rid, reserved=300, charge=120
        ),
        reserve(repository, 10),
    )
    assert settled
    assert quota == Quota(LIMIT, LIMIT - 120 - 10)
    assert "find" not in commands.names
    assert (await stored(usage))["remainingTokens"] == LIMIT - 120 - 10


async def test_a_settlement_that_did_not_apply_leaves_no_wrong_figures(
    usage: AsyncCollection[Document],
) -> None:
    repository = replica(usage)
    await reserve(repository, 300)
    not_open = await repository.settle(
        key=usage_key("u1", PERIOD), reservation_id=uuid.uuid4().hex, reserved=300, charge=120
    )
    assert not not_open
    assert await reserve(repository, 10) == Quota(LIMIT, LIMIT - 300 - 10)


async def test_a_limit_change_is_never_reported_with_old_figures(
    usage: AsyncCollection[Document],
) -> None:
    repository, admin = replica(usage), replica(usage)
    await reserve(repository, 100)
    await admin.set_limit(user_id="u1", period=PERIOD, key=usage_key("u1", PERIOD), limit=5000)
    assert await reserve(repository, 100) == Quota(5000, 4800)


async def test_a_hint_above_the_real_remainder_cannot_overspend(
    usage: AsyncCollection[Document],
) -> None:
    first, second = replica(usage), replica(usage)
    await reserve(first, 100)  # first believes 900 are left
    assert await reserve(second, 850) == Quota(LIMIT, 50)
    assert await reserve(first, 800) is None  # 50 left in truth
    assert (await stored(usage))["remainingTokens"] == 50


async def test_concurrent_reservations_on_one_month_never_overshoot(
    usage: AsyncCollection[Document],
) -> None:
    replicas = [replica(usage), replica(usage)]
    await reserve(replicas[0], 10)
    await reserve(replicas[1], 10)  # both now hold hints, soon stale
    results = await asyncio.gather(*(reserve(replicas[i % 2], 45) for i in range(40)))
    granted = [quota for quota in results if quota is not None]
    assert len(granted) == (LIMIT - 20) // 45
    document = await stored(usage)
    assert document["remainingTokens"] == LIMIT - 20 - 45 * len(granted)
    assert document["reservedTokens"] == 20 + 45 * len(granted)
    # Every answer is an upper bound that was true at some moment: never below the final.
    assert min(quota.remaining for quota in granted) == document["remainingTokens"]


async def test_a_batched_settlement_applies_once_and_never_creates_a_document(
    usage: AsyncCollection[Document],
) -> None:
    repository = replica(usage)
    rid = uuid.uuid4().hex
    await repository.reserve(hold(80, rid=rid), limit=LIMIT)

    async def settle(reservation_id: str, reserved: int, period: str = PERIOD) -> bool:
        return await repository.settle(
            key=usage_key("u1", period), reservation_id=reservation_id, reserved=reserved, charge=30
        )

    outcomes = await asyncio.gather(
        settle(rid, 79),  # not the amount reserved
        settle(uuid.uuid4().hex, 80),  # no such reservation
        settle(rid, 80, period="2026-10"),  # no such month
        settle(rid, 80),
        settle(rid, 80),  # a repeat in the same batch
    )
    assert list(outcomes) == [False, False, False, True, False]
    assert await usage.count_documents({}) == 1
    document = await stored(usage)
    assert (document["usedTokens"], document["reservedTokens"], document["open"]) == (30, 0, [])
    assert document["remainingTokens"] == LIMIT - 30
