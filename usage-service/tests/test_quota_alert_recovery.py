"""What keeps quota alerts from being lost or doubled, against a real MongoDB-protocol server: the
detector's cheap filter (the quota hint), the recovery sweep behind it, idempotent event ids, and
the delivery queue's leases shared by several workers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from infergate_common.webhooks import Attempt, DeliveryStatus
from prometheus_client import CollectorRegistry
from usage_calls import new_user
from usage_service.alert_targets import AlertTargets
from usage_service.documents import new_usage
from usage_service.periods import current_period, usage_key
from usage_service.quota_alert_sweep import AlertSweep
from usage_service.quota_alerts import QuotaAlerts
from usage_service.quota_hints import Quota
from usage_service.webhook_configs import WebhookConfigs
from usage_service.webhook_events import Crossing, Target, WebhookEvents, event_id
from usage_service.webhook_metrics import WebhookMetrics


class Hints:
    """What the ledger's quota hints say (a hint is a process's last view: it can be stale)."""

    def __init__(self, hints: dict[str, Quota] | None = None) -> None:
        self.hints = hints or {}

    def hint(self, key: str) -> Quota | None:
        return self.hints.get(key)


class Pieces:
    """Detection and the sweep of one process (a new one has nothing in memory)."""

    def __init__(self, db: Any, hints: Hints, *, global_thresholds: tuple[int, ...] | None = None):
        self.configs = WebhookConfigs(db["webhooks"])
        self.events = WebhookEvents(db["webhook_events"])
        self.targets = AlertTargets(self.configs, global_thresholds=global_thresholds)
        self.alerts = QuotaAlerts(
            usage=db["usage"],
            hints=hints,
            targets=self.targets,
            events=self.events,
            metrics=WebhookMetrics.create(CollectorRegistry()),
        )
        self.sweep = AlertSweep(
            usage=db["usage"],
            state=db["webhook_state"],
            configs=self.configs,
            targets=self.targets,
            alerts=self.alerts,
            interval_s=60,
        )


async def month_at(db: Any, user: str, *, used: int, limit: int = 1000) -> str:
    """The user's month as the ledger holds it after settlements of `used` tokens; its key."""
    period = current_period()
    key = usage_key(user, period)
    document = new_usage(key, user_id=user, period=period, limit=limit, now=datetime.now(UTC))
    document.update(usedTokens=used, remainingTokens=limit - used)
    await db["usage"].insert_one(document)
    return key


async def with_webhook(pieces: Pieces, user: str, thresholds: list[int]) -> None:
    await pieces.configs.put(user, url="https://93.184.215.14/", thresholds=thresholds, now=_now())


def _now() -> datetime:
    return datetime.now(UTC)


async def test_a_hint_far_below_every_threshold_spares_the_read(db: Any) -> None:
    """The hint says 10 % used (another replica charged since): detection does not read the
    month, so it does not see the 95 %; the sweep does, and queues the event once."""
    user = new_user()
    key = await month_at(db, user, used=950)
    stale = Pieces(db, Hints({key: Quota(limit=1000, remaining=900)}))
    await with_webhook(stale, user, [80])
    expected = event_id(Target.USER, user, current_period(), 80)
    assert await stale.alerts.check({key: (user, current_period())}) == 0
    assert await stale.events.known([expected]) == set()
    assert await stale.sweep.sweep_once() == 1
    assert await stale.events.known([expected]) == {expected}
    # A hint near the threshold, as the detecting process sees after its own settlement: read.
    other = new_user()
    near = await month_at(db, other, used=850)
    close = Pieces(db, Hints({near: Quota(limit=1000, remaining=120)}))
    await with_webhook(close, other, [80])
    assert await close.alerts.check({near: (other, current_period())}) == 1


async def test_a_detection_lost_with_its_process_is_recovered_by_the_next_sweep(db: Any) -> None:
    """The month was charged past 80 % and the process died before its detector's pass: the next
    process's startup sweep queues the event; later sweeps and detections queue nothing more."""
    user = new_user()
    key = await month_at(db, user, used=900)
    first = Pieces(db, Hints())
    await with_webhook(first, user, [50, 80, 100])
    restarted = Pieces(db, Hints())
    assert await restarted.sweep.sweep_once() == 2  # 50 and 80
    assert await restarted.sweep.sweep_once() == 0
    again = Pieces(db, Hints())  # nothing in memory: the database refuses the repeats
    assert await again.alerts.check({key: (user, current_period())}) == 0
    assert await again.sweep.sweep_once() == 0
    queued = await db["webhook_events"].find({"userId": user}).to_list()
    assert sorted(event["threshold"] for event in queued) == [50, 80]


async def test_the_sweep_takes_turns_across_replicas(db: Any) -> None:
    one, two = Pieces(db, Hints()), Pieces(db, Hints())
    user = new_user()
    await with_webhook(one, user, [80])
    await month_at(db, user, used=800)
    turns = await asyncio.gather(one.sweep.sweep_once(claim=True), two.sweep.sweep_once(claim=True))
    assert sorted(turns, key=lambda turn: turn is None) == [1, None]


async def test_the_global_webhook_makes_every_user_a_target(db: Any) -> None:
    user = new_user()  # no webhook of their own
    key = await month_at(db, user, used=600)
    pieces = Pieces(db, Hints(), global_thresholds=(50, 90))
    assert await pieces.alerts.check({key: (user, current_period())}) == 1
    assert await pieces.events.known([event_id(Target.GLOBAL, user, current_period(), 50)])
    # Never marked (its process died): the sweep reads every user's changed months.
    unmarked = new_user()
    await month_at(db, unmarked, used=950)
    assert await pieces.sweep.sweep_once() == 2  # its 50 and 90; the first user's 50 is known


def crossings(count: int) -> list[Crossing]:
    user, period = new_user(), current_period()
    return [Crossing(Target.USER, user, period, n, 1000, 1000) for n in range(1, count + 1)]


async def test_each_event_is_claimed_by_one_worker_until_its_lease_ends(db: Any) -> None:
    events, other_replica = WebhookEvents(db["webhook_events"]), WebhookEvents(db["webhook_events"])
    await events.ensure_indexes()
    queued = await events.enqueue(crossings(6), now=_now())
    now = _now() + timedelta(seconds=1)
    mine, theirs = await asyncio.gather(
        events.claim_due(now, limit=10, lease_s=30),
        other_replica.claim_due(now, limit=10, lease_s=30),
    )
    assert sorted(event.id for event in [*mine, *theirs]) == sorted(queued)  # each once
    assert await events.claim_due(now, limit=10, lease_s=30) == []
    # The worker holding them died: when the lease ends they are due again.
    later = now + timedelta(seconds=31)
    retaken = await events.claim_due(later, limit=10, lease_s=30)
    assert sorted(event.id for event in retaken) == sorted(queued)
    assert {event.attempts for event in retaken} == {2}
    attempt = Attempt(at=later, status_code=204, duration_ms=1.0)
    dead = next(event for event in [*mine, *theirs] if event.id == retaken[0].id)
    # The dead worker's outcome, arriving late, is refused; the new holder's is kept.
    assert not await events.finish_attempt(
        dead, attempt, status=DeliveryStatus.DELIVERED, next_attempt_at=None
    )
    assert await events.finish_attempt(
        retaken[0], attempt, status=DeliveryStatus.DELIVERED, next_attempt_at=None
    )


async def test_a_crossing_queued_twice_at_once_is_one_event(db: Any) -> None:
    events = WebhookEvents(db["webhook_events"])
    [crossing] = crossings(1)
    results = await asyncio.gather(*(events.enqueue([crossing], now=_now()) for _ in range(2)))
    assert sorted(len(ids) for ids in results) == [0, 1]
    assert await db["webhook_events"].count_documents({"userId": crossing.user_id}) == 1
