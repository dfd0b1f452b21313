"""The recovery sweep: finds the crossings whose detection was lost (a process killed before its
detector's next pass) or missed (a stale quota hint), and queues their events.

It rereads every month document changed since the last sweep that finished (`updatedAt`, which
every settlement sets, compared with a watermark kept in the database with a minute's margin for
clocks and writes in flight), checks it against its targets' thresholds, and queues what is
missing (idempotent by event id, like the detector). A sweep that fails or dies does not move the
watermark: the next one covers the same months again. So a crossing is lost only if its month
is never read by a sweep, and every month changed after a finished sweep started is read by the
next one.

A replica runs one sweep as it starts (what its previous run may have lost), then one every
QUOTA_WEBHOOK_SWEEP_SECONDS across all replicas (a claim on the schedule in the same document).
Cost: with the operator's global webhook every user is a target, and the query on `updatedAt` is
a collection scan (an index there would slow every reservation and settlement, see
usage_repository); without it, only the users with a webhook are read, by `_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import structlog
from infergate_common.billing import period_of
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from usage_service.alert_targets import AlertTargets
from usage_service.documents import Document, as_utc
from usage_service.periods import usage_key
from usage_service.quota_alerts import MONTH_FIGURES, QuotaAlerts
from usage_service.webhook_configs import WebhookConfigs
from usage_service.webhook_metrics import Detection

_log = structlog.get_logger("quota_alert_sweep")
STATE_ID = "quota_alert_sweep"
MARGIN = timedelta(minutes=1)
_PAGE = 500
_MONTHS_BACK = 2  # a sweep after a long outage looks at this month and the one before
Clock = Callable[[], datetime]


class AlertSweep:
    def __init__(
        self,
        *,
        usage: AsyncCollection[Document],
        state: AsyncCollection[Document],
        configs: WebhookConfigs,
        targets: AlertTargets,
        alerts: QuotaAlerts,
        interval_s: float,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self._usage = usage
        self._state = state
        self._configs = configs
        self._targets = targets
        self._alerts = alerts
        self._interval_s = interval_s
        self._clock = clock
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        """One sweep now, then one per interval across replicas, until `stop`."""
        await self._logged(claim=False)
        while not await self._stopped_within(self._interval_s):
            await self._logged(claim=True)

    def stop(self) -> None:
        self._stopped.set()

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)
        return self._stopped.is_set()

    async def _logged(self, *, claim: bool) -> None:
        try:
            await self.sweep_once(claim=claim)
        except Exception:  # noqa: BLE001 - the next sweep covers the same months again
            _log.exception("quota_alert_sweep_failed")

    async def sweep_once(self, *, claim: bool = False) -> int | None:
        """Queue the missing events of the months changed since the last sweep; how many
        (None: another replica's turn)."""
        started = self._clock()
        if claim and not await self._claim(started):
            return None
        if not self._targets.has_global and not await self._configs.users_after(None, limit=1):
            await self._advance(started)
            return 0
        since = await self._watermark(started) - MARGIN
        queued = 0
        async for months in self._changed_since(since, started):
            targets = await self._targets.of({month["userId"] for month in months})
            queued += await self._alerts.queue(
                self._alerts.crossings(months, targets), Detection.SWEEP
            )
        await self._advance(started)
        if queued:
            _log.warning("quota_alerts_recovered", count=queued)
        return queued

    def _changed_since(self, since: datetime, now: datetime) -> AsyncIterator[list[Document]]:
        """Pages of the month documents changed since `since` that have a target."""
        changed: Document = {"updatedAt": {"$gte": since}}
        if self._targets.has_global:
            return self._everyones(changed)
        return self._subscribers(changed, _periods(since, now))

    async def _everyones(self, changed: Document) -> AsyncIterator[list[Document]]:
        """Every user's months: pages by `_id`, each its own query (one cursor over them all
        would be bounded by the client's timeoutMS for its whole life)."""
        after = ""
        while months := await self._usage.find(
            {**changed, "_id": {"$gt": after}},
            MONTH_FIGURES,
            sort=[("_id", ASCENDING)],
            limit=_PAGE,
        ).to_list():
            after = months[-1]["_id"]
            yield months

    async def _subscribers(
        self, changed: Document, periods: list[str]
    ) -> AsyncIterator[list[Document]]:
        """The months of the users with a webhook, read by `_id`."""
        after: str | None = None
        while users := await self._configs.users_after(after, limit=_PAGE):
            after = users[-1]
            keys = [usage_key(user, period) for user in users for period in periods]
            yield await self._usage.find({"_id": {"$in": keys}, **changed}, MONTH_FIGURES).to_list()

    async def _claim(self, now: datetime) -> bool:
        """This replica's turn: the schedule was due, and this replica moved it on."""
        try:
            await self._state.update_one(
                {"_id": STATE_ID, "nextSweepAt": {"$lte": now}},
                {"$set": {"nextSweepAt": now + timedelta(seconds=self._interval_s * 0.9)}},
                upsert=True,
            )
        except DuplicateKeyError:  # not due (the upsert's insert met the existing document)
            return False
        return True

    async def _watermark(self, now: datetime) -> datetime:
        state = await self._state.find_one({"_id": STATE_ID}, {"watermark": 1})
        if state is None or state.get("watermark") is None:  # never swept: this whole month
            return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return as_utc(state["watermark"])

    async def _advance(self, started: datetime) -> None:
        await self._state.update_one(
            {"_id": STATE_ID}, {"$max": {"watermark": started}}, upsert=True
        )


def _periods(since: datetime, now: datetime) -> list[str]:
    """The months from `since` to `now`, at most the last `_MONTHS_BACK`."""
    periods = []
    moment = now
    for _ in range(_MONTHS_BACK):
        periods.append(period_of(moment))
        if period_of(moment) <= period_of(since):
            break
        moment = moment.replace(day=1) - timedelta(days=1)
    return periods
