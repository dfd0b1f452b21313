"""usage-service's own metrics (served at /metrics with the HTTP ones). Labels are fixed words;
never a user id, request id or month key."""

from __future__ import annotations

import time
from dataclasses import dataclass

from infergate_common.metrics import counter, gauge, histogram
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# A batch holds 1 to 256 writes (group_commit.DEFAULT_MAX_BATCH).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
WRITERS = ("usage", "request_log")


@dataclass(frozen=True, slots=True)
class UsageMetrics:
    batch_size: Histogram
    sweeper_runs: Counter
    sweeper_last_success: Gauge
    sweeper_released: Counter
    reservations: Counter
    quota_tokens: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> UsageMetrics:
        metrics = cls(
            batch_size=histogram(
                "infergate_usage_group_commit_batch_size",
                "Writes per MongoDB bulkWrite of a group commit, by collection written.",
                ["writer"],
                buckets=BATCH_BUCKETS,
                registry=registry,
            ),
            sweeper_runs=counter(
                "infergate_usage_sweeper_runs_total",
                "Passes of the reservation sweeper, by outcome (ok or error).",
                ["outcome"],
                registry=registry,
            ),
            sweeper_last_success=gauge(
                "infergate_usage_sweeper_last_success_timestamp_seconds",
                "When the sweeper last finished a pass (Unix time; the process start before).",
                registry=registry,
            ),
            sweeper_released=counter(
                "infergate_usage_sweeper_released_total",
                "Reservations the sweeper released because no settlement came in time.",
                registry=registry,
            ),
            reservations=counter(
                "infergate_quota_reservations_total",
                "Quota reservations by outcome; usage-service counts those that expired "
                "(released unsettled by the sweeper), the gateway the others.",
                ["outcome"],
                registry=registry,
            ),
            quota_tokens=counter(
                "infergate_quota_tokens_total",
                "Tokens of reservations that expired (handed back to the user unsettled).",
                ["kind"],
                registry=registry,
            ),
        )
        for writer in WRITERS:
            metrics.batch_size.labels(writer)
        for outcome in ("ok", "error"):
            metrics.sweeper_runs.labels(outcome)
        metrics.reservations.labels("expired")
        metrics.quota_tokens.labels("expired")
        # "Not run yet" is not "failed long ago": the first pass is one interval away.
        metrics.sweeper_last_success.set(time.time())
        return metrics

    def expired(self, tokens: int) -> None:
        self.reservations.labels("expired").inc()
        self.quota_tokens.labels("expired").inc(tokens)
