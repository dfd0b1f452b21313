"""Noticing that a settlement took a user's month past a threshold, without slowing the chat path.

The settlement itself is untouched: it stays one batched update that reads nothing back. After it
is applied, `charged` (called by `Metering.settle`) only marks the user's month in an in-process
set: no database call, no task, no await. A background task takes the marked months, all at once
(so a busy service checks many months per pass, like the group commit), and decides which are
worth a read with what this process already knows:

* whom to tell (`AlertTargets`: the user's webhook, the operator's; cached) and which of their
  events are queued already (a bounded set of event ids): a month with nothing left to tell is
  done without a read;
* the quota hint the ledger keeps for the next reservation: `limit - remaining` is the month's
  used plus reserved tokens, an upper bound of used. A month whose bound is below every threshold
  left cannot have crossed one: most settlements end here. A month without a hint is read.

The months left are read in one query (`_id $in`), and an event is queued for each threshold
their used tokens have reached (`WebhookEvents.enqueue`, idempotent by event id).

What this can lose, and what recovers it: the marked set lives in memory, so a process killed
between a settlement and the next pass loses those marks (at most one pass of them; a graceful
stop runs a last pass), and a hint can be stale (another replica changed the month), so a bound
can be too low. The recovery sweep (quota_alert_sweep) rereads every month changed since its last
pass and queues what is missing; being keyed by event id, a crossing found twice is queued once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from pymongo.asynchronous.collection import AsyncCollection

from usage_service.alert_targets import AlertTargets, TargetThresholds
from usage_service.documents import Document
from usage_service.periods import usage_key
from usage_service.quota_hints import Quota
from usage_service.webhook_events import Crossing, WebhookEvents, event_id
from usage_service.webhook_metrics import Detection, WebhookMetrics

_log = structlog.get_logger("quota_alerts")
MONTH_FIGURES = {"userId": 1, "period": 1, "usedTokens": 1, "monthlyTokenLimit": 1}
_KNOWN_KEPT = 100_000
_MAX_MARKED = 100_000  # beyond this, marks are dropped (the sweep finds their crossings)
_RETRY_S = 1.0


class HintSource(Protocol):
    """The ledger's figures for the next reservation: `UsageRepository`."""

    def hint(self, key: str) -> Quota | None: ...


class QuotaAlerts:
    def __init__(
        self,
        *,
        usage: AsyncCollection[Document],
        hints: HintSource,
        targets: AlertTargets,
        events: WebhookEvents,
        metrics: WebhookMetrics,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self._usage = usage
        self._hints = hints
        self._targets = targets
        self._events = events
        self._metrics = metrics
        self._on_queued = on_queued  # wakes the delivery worker
        self._marked: dict[str, tuple[str, str]] = {}
        self._known: OrderedDict[str, None] = OrderedDict()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()

    def charged(self, user_id: str, period: str) -> None:
        """A settlement charged the user's month (on the request path: memory only)."""
        if len(self._marked) < _MAX_MARKED:
            self._marked[usage_key(user_id, period)] = (user_id, period)
            self._wake.set()

    async def run(self) -> None:
        """Check the marked months until `stop` (then once more: none is left behind)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            marked, self._marked = self._marked, {}
            if marked:
                await self._check_or_keep(marked)
            if self._stopped.is_set():
                return

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    async def _check_or_keep(self, marked: dict[str, tuple[str, str]]) -> None:
        try:
            await self.check(marked)
        except Exception:  # noqa: BLE001 - a detector that dies detects nothing again
            _log.exception("quota_alert_check_failed", months=len(marked))
            if self._stopped.is_set():
                return  # the sweep of the next process finds them
            self._marked = {**marked, **self._marked}
            with contextlib.suppress(TimeoutError):  # a pause, cut short by `stop`
                await asyncio.wait_for(self._stopped.wait(), _RETRY_S)
            self._wake.set()

    async def check(self, marked: Mapping[str, tuple[str, str]]) -> int:
        """Queue the events of the marked months' crossings; how many were new."""
        targets = await self._targets.of({user for user, _ in marked.values()})
        worth_reading = [
            key
            for key, (user, period) in marked.items()
            if self._may_have_crossed(key, user, period, targets[user])
        ]
        if not worth_reading:
            return 0
        months = await self._usage.find({"_id": {"$in": worth_reading}}, MONTH_FIGURES).to_list()
        return await self.queue(self.crossings(months, targets), Detection.SETTLEMENT)

    def _may_have_crossed(
        self, key: str, user: str, period: str, targets: TargetThresholds
    ) -> bool:
        left = [
            threshold
            for target, thresholds in targets
            for threshold in thresholds
            if event_id(target, user, period, threshold) not in self._known
        ]
        if not left:
            return False
        hint = self._hints.hint(key)
        if hint is None:
            return True
        most_used = hint.limit - hint.remaining  # used + reserved
        return most_used * 100 >= min(left) * hint.limit

    def crossings(
        self, months: Iterable[Document], targets: Mapping[str, TargetThresholds]
    ) -> list[Crossing]:
        """The crossings of these month documents not known to be queued already."""
        found = []
        for month in months:
            used, limit = month["usedTokens"], month["monthlyTokenLimit"]
            for target, thresholds in targets.get(month["userId"], []):
                for threshold in thresholds:
                    crossing = Crossing(
                        target, month["userId"], month["period"], threshold, used, limit
                    )
                    if used * 100 >= threshold * limit and crossing.event_id not in self._known:
                        found.append(crossing)
        return found

    async def queue(self, crossings: list[Crossing], detection: Detection) -> int:
        """Queue an event per crossing (once per event id, ever); how many were new."""
        queued = set(await self._events.enqueue(crossings, now=datetime.now(UTC)))
        for crossing in crossings:
            self._remember(crossing.event_id)
            if crossing.event_id in queued:
                _log.info("quota_alert_queued", detection=detection.value, **_fields(crossing))
        if queued:
            self._metrics.queued.labels(detection.value).inc(len(queued))
            self._on_queued()
        return len(queued)

    def _remember(self, known: str) -> None:
        self._known[known] = None
        self._known.move_to_end(known)
        if len(self._known) > _KNOWN_KEPT:
            self._known.popitem(last=False)


def _fields(crossing: Crossing) -> dict[str, Any]:
    return {
        "event_id": crossing.event_id,
        "target": crossing.target.value,
        "user_id": crossing.user_id,
        "period": crossing.period,
        "threshold": crossing.threshold,
    }
