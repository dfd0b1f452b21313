"""Delivering the queued webhook events: a background worker in each replica (see webhook_events
for the claim and the lease that make several replicas safe).

An attempt is a signed POST (webhook_signing) with a short timeout, redirects not followed, from a
client whose resolver keeps only allowed addresses (webhook_urls). A 2xx answer delivers the
event; anything else (another status, a timeout, a refused address, no connection) schedules the
next attempt after an exponential backoff with jitter (QUOTA_WEBHOOK_RETRY_SECONDS doubled per
attempt, at most an hour, times a random 0.5-1 so that retries do not come in step), until the
event is QUOTA_WEBHOOK_MAX_AGE_SECONDS old: then it is failed. Every attempt is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from infergate_common.webhooks import Attempt, DeliveryStatus

from usage_service.config import Settings
from usage_service.webhook_configs import WebhookConfigs
from usage_service.webhook_events import ClaimedEvent, Target, WebhookEvents
from usage_service.webhook_metrics import AttemptOutcome, WebhookMetrics
from usage_service.webhook_sender import WebhookSender, open_sender
from usage_service.webhook_signing import signed_headers, signing_key
from usage_service.webhook_urls import parse_url

_log = structlog.get_logger("webhook_delivery")
RETRY_CAP_S = 3600.0
_BATCH = 16  # events claimed (and attempted concurrently) per round
_GAUGE_EVERY_S = 5.0
_STATUS = {
    AttemptOutcome.DELIVERED: DeliveryStatus.DELIVERED,
    AttemptOutcome.RETRY: DeliveryStatus.PENDING,
    AttemptOutcome.FAILED: DeliveryStatus.FAILED,
}


@dataclass(frozen=True, slots=True)
class Schedule:
    """When to try again, and for how long."""

    retry_base_s: float
    max_age_s: float
    lease_s: float  # longer than an attempt and the write of its outcome

    def next_attempt(
        self, *, attempts: int, created_at: datetime, now: datetime
    ) -> datetime | None:
        """After `attempts` failed attempts: when to try again (None: give up)."""
        delay = min(RETRY_CAP_S, self.retry_base_s * 2 ** min(attempts - 1, 20))
        delay *= random.uniform(0.5, 1.0)
        at = now + timedelta(seconds=delay)
        return None if at > created_at + timedelta(seconds=self.max_age_s) else at


@dataclass(frozen=True, slots=True)
class GlobalWebhook:
    """The operator's webhook (QUOTA_WEBHOOK_URL, signed with QUOTA_WEBHOOK_SECRET)."""

    url: str
    secret: str

    @classmethod
    def of(cls, settings: Settings) -> GlobalWebhook | None:
        url, secret = settings.quota_webhook_url, settings.quota_webhook_secret
        return None if url is None or secret is None else cls(url, secret.get_secret_value())


class DeliveryWorker:
    def __init__(
        self,
        *,
        events: WebhookEvents,
        configs: WebhookConfigs,
        sender: WebhookSender,
        schedule: Schedule,
        global_webhook: GlobalWebhook | None,
        poll_s: float,
        metrics: WebhookMetrics,
    ) -> None:
        self._events = events
        self._configs = configs
        self._sender = sender
        self._schedule = schedule
        self._global = global_webhook
        self._poll_s = poll_s
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._gauge_at = 0.0

    def wake(self) -> None:
        """Events were queued: look now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Stop after the attempts in progress (each ends within its timeout)."""
        self._stopped.set()
        self._wake.set()

    async def run(self) -> None:
        while not self._stopped.is_set():
            self._wake.clear()
            try:
                attempted = await self.deliver_due()
                await self._update_gauge(changed=attempted > 0)
            except Exception:  # noqa: BLE001 - a worker that dies delivers nothing again
                _log.exception("webhook_worker_failed")
                attempted = 0
            if attempted < _BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)

    async def deliver_due(self) -> int:
        """Attempt the events due now (up to a batch); how many."""
        now = datetime.now(UTC)
        claimed = await self._events.claim_due(now, limit=_BATCH, lease_s=self._schedule.lease_s)
        outcomes = await asyncio.gather(
            *(self.deliver(event) for event in claimed), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                _log.error("webhook_outcome_not_recorded", error_type=type(outcome).__name__)
        return len(claimed)

    async def deliver(self, event: ClaimedEvent) -> AttemptOutcome:
        """One attempt of a claimed event, recorded under its lease."""
        destination = await self._destination(event)
        if destination is None:
            attempt = Attempt(at=datetime.now(UTC), error="the webhook was removed", duration_ms=0)
            outcome, next_at, origin = AttemptOutcome.FAILED, None, None
        else:
            url, secret = destination
            attempt = await self._attempt(event, url=url, secret=secret)
            outcome, next_at = self._outcome(event, attempt)
            origin = parse_url(url).origin
        kept = await self._events.finish_attempt(
            event, attempt, status=_STATUS[outcome], next_attempt_at=next_at
        )
        self._metrics.deliveries.labels(outcome.value).inc()
        log = _log.info if outcome is AttemptOutcome.DELIVERED else _log.warning
        log(
            f"webhook_{outcome.value}",
            event_id=event.id,
            target=event.target.value,
            user_id=event.user_id,
            attempt=event.attempts,
            status_code=attempt.status_code,
            error=attempt.error,
            destination=origin,
            lease_kept=kept,
        )
        return outcome

    async def _attempt(self, event: ClaimedEvent, *, url: str, secret: str) -> Attempt:
        body = event.body()
        key = signing_key(secret)
        headers = signed_headers(key, event_id=event.id, timestamp=int(time.time()), body=body)
        return await self._sender.post(url, body=body, headers=headers)

    def _outcome(
        self, event: ClaimedEvent, attempt: Attempt
    ) -> tuple[AttemptOutcome, datetime | None]:
        if attempt.status_code is not None and 200 <= attempt.status_code < 300:
            return AttemptOutcome.DELIVERED, None
        next_at = self._schedule.next_attempt(
            attempts=event.attempts, created_at=event.created_at, now=attempt.at
        )
        return (AttemptOutcome.FAILED, None) if next_at is None else (AttemptOutcome.RETRY, next_at)

    async def _destination(self, event: ClaimedEvent) -> tuple[str, str] | None:
        """Where the event goes now, and the secret to sign with (None: nowhere any more)."""
        if event.target is Target.GLOBAL:
            return None if self._global is None else (self._global.url, self._global.secret)
        config = await self._configs.get(event.user_id)
        return None if config is None else (config.url, config.secret)

    async def _update_gauge(self, *, changed: bool) -> None:
        """After attempts, and every few seconds (other replicas change the queue too)."""
        if changed or time.monotonic() - self._gauge_at >= _GAUGE_EVERY_S:
            self._gauge_at = time.monotonic()
            self._metrics.pending.set(await self._events.pending_count())


def open_delivery(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    events: WebhookEvents,
    configs: WebhookConfigs,
    global_webhook: GlobalWebhook | None,
    metrics: WebhookMetrics,
) -> DeliveryWorker:
    """The worker, with its HTTP client (closed with the stack)."""
    timeout_s = settings.quota_webhook_timeout_seconds
    return DeliveryWorker(
        events=events,
        configs=configs,
        sender=open_sender(settings, stack),
        schedule=Schedule(
            retry_base_s=settings.quota_webhook_retry_seconds,
            max_age_s=settings.quota_webhook_max_age_seconds,
            # An attempt, then the write of its outcome, then a second to spare.
            lease_s=timeout_s + settings.mongo_timeout_ms / 1000 + 1,
        ),
        global_webhook=global_webhook,
        poll_s=settings.quota_webhook_poll_seconds,
        metrics=metrics,
    )
