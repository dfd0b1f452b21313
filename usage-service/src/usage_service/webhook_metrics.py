"""Metrics of quota alerts by webhook (served with usage-service's others at /metrics). Labels are
fixed words: never a user id, event id or URL."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from infergate_common.metrics import counter, gauge
from prometheus_client import CollectorRegistry, Counter, Gauge


class AttemptOutcome(StrEnum):
    DELIVERED = "delivered"  # answered 2xx
    RETRY = "retry"  # failed; another attempt is scheduled
    FAILED = "failed"  # failed, and given up (too old, or the webhook is gone)


class Detection(StrEnum):
    SETTLEMENT = "settlement"  # noticed after a settlement, off the request path
    SWEEP = "sweep"  # found by the recovery sweep (a detection lost or missed before)


@dataclass(frozen=True, slots=True)
class WebhookMetrics:
    deliveries: Counter
    pending: Gauge
    queued: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WebhookMetrics:
        metrics = cls(
            deliveries=counter(
                "infergate_webhook_deliveries_total",
                "Webhook delivery attempts by outcome: delivered (2xx), retry (failed, another "
                "attempt scheduled), failed (failed and given up).",
                ["outcome"],
                registry=registry,
            ),
            pending=gauge(
                "infergate_webhook_events_pending",
                "Webhook events not yet delivered nor failed (the queue's count, as this replica "
                "last read it).",
                registry=registry,
            ),
            queued=counter(
                "infergate_webhook_events_queued_total",
                "Quota alert events queued, by how the crossing was found (settlement or sweep).",
                ["detection"],
                registry=registry,
            ),
        )
        for outcome in AttemptOutcome:
            metrics.deliveries.labels(outcome.value)
        for detection in Detection:
            metrics.queued.labels(detection.value)
        return metrics
