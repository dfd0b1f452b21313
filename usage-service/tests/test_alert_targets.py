"""Whom a quota alert goes to, and what finding out costs: a user without a webhook is known to
have none from the list of users who have one (read at most once per TTL), not by a read of
their own per settlement. Against a real MongoDB-protocol server."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from usage_calls import new_user
from usage_service.alert_targets import AlertTargets
from usage_service.webhook_configs import WebhookConfigs
from usage_service.webhook_events import Target

TTL_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountedConfigs(WebhookConfigs):
    """The real webhooks collection, with the reads detection makes counted; `gate`, when set,
    holds the list read's answer until it is opened."""

    def __init__(self, db: Any) -> None:
        super().__init__(db["webhooks"])
        self.listed = 0
        self.looked_up: list[str] = []
        self.gate: asyncio.Event | None = None
        self.listing = asyncio.Event()

    async def users_with_webhooks(self, *, limit: int) -> list[str]:
        self.listed += 1
        found = await super().users_with_webhooks(limit=limit)
        self.listing.set()
        if self.gate is not None:
            await self.gate.wait()
        return found

    async def thresholds_of(self, user_ids: Collection[str]) -> dict[str, tuple[int, ...]]:
        self.looked_up.extend(user_ids)
        return await super().thresholds_of(user_ids)


async def with_webhook(configs: WebhookConfigs, user: str, thresholds: list[int]) -> None:
    await configs.put(
        user, url="https://93.184.215.14/", thresholds=thresholds, now=datetime.now(UTC)
    )


async def test_users_without_a_webhook_cost_one_list_read_per_ttl_not_a_read_each(
    db: Any,
) -> None:
    configs, clock = CountedConfigs(db), Clock()
    targets = AlertTargets(configs, global_thresholds=(100,), ttl_s=TTL_S, clock=clock)
    owner, others = new_user(), [new_user() for _ in range(5)]
    await with_webhook(configs, owner, [50, 80])
    for user in others:
        assert await targets.of({user}) == {user: [(Target.GLOBAL, (100,))]}
    assert (configs.listed, configs.looked_up) == (1, [])
    found = await targets.of({owner})
    assert found == {owner: [(Target.USER, (50, 80)), (Target.GLOBAL, (100,))]}
    assert configs.looked_up == [owner]  # a user with a webhook: their thresholds, read once
    clock.now += TTL_S + 1
    late = new_user()
    await with_webhook(configs, late, [90])  # as through another replica: seen once re-listed
    assert await targets.of({late}) == {late: [(Target.USER, (90,)), (Target.GLOBAL, (100,))]}
    assert configs.listed == 2


async def test_a_webhook_made_through_this_replica_during_the_list_read_is_listed(
    db: Any,
) -> None:
    """The list read from before the webhook existed does not drop it when it lands."""
    configs, clock = CountedConfigs(db), Clock()
    targets = AlertTargets(configs, global_thresholds=None, ttl_s=TTL_S, clock=clock)
    user, other = new_user(), new_user()
    configs.gate = asyncio.Event()
    read_at = clock.now
    reading = asyncio.create_task(targets.of({other}))
    await configs.listing.wait()  # the list was read (without `user`), not yet used
    await with_webhook(configs, user, [75])
    clock.now = read_at - 10  # its cached thresholds expire before the list does
    targets.changed(user, (75,))
    clock.now = read_at
    configs.gate.set()
    assert await reading == {other: []}
    clock.now = read_at + TTL_S - 5  # the thresholds' entry has expired, the list has not
    assert await targets.of({user}) == {user: [(Target.USER, (75,))]}
    assert (configs.listed, configs.looked_up) == (1, [user])
    targets.changed(user, None)
    assert await targets.of({user}) == {user: []}


async def test_beyond_max_listed_users_with_a_webhook_each_user_is_looked_up(db: Any) -> None:
    configs = CountedConfigs(db)
    targets = AlertTargets(configs, global_thresholds=None, max_listed=2)
    for _ in range(3):
        await with_webhook(configs, new_user(), [80])
    nobody = new_user()
    assert await targets.of({nobody}) == {nobody: []}
    assert configs.looked_up == [nobody]
    assert configs.listed == 1
