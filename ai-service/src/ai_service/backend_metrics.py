"""What ai-service records per model backend (the `backend` label is a configured name, never a
URL): calls by outcome, their duration, and, read at scrape time so the chat path pays nothing
for them, calls in flight and the circuit breaker's state (1 for its state, 0 for the others,
as the gateway's `infergate_circuit_breaker_state`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from infergate_common.circuit_breaker import CircuitState
from infergate_common.metrics import LATENCY_BUCKETS, MetricsOff, counter, histogram
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

Outcome = Literal["ok", "error", "timeout", "model_missing", "rejected", "cancelled"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "error", "timeout", "model_missing", "rejected", "cancelled")


class BackendMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = counter(
            "infergate_ai_backend_requests_total",
            "Model calls per backend by outcome: ok, error (5xx, refused, invalid answer), "
            "timeout, model_missing (404), rejected (other 4xx), cancelled (caller left).",
            ["backend", "outcome"],
            registry=registry,
        )
        self.duration = histogram(
            "infergate_ai_backend_request_duration_seconds",
            "Model calls per backend, from the request to the end of the answer.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.retries = counter(
            "infergate_ai_backend_retries_total",
            "Calls that failed before any output on this backend and were retried on another.",
            ["backend"],
            registry=registry,
        )
        self._registry = registry

    def watch(self, gauges: BackendGauges) -> None:
        if not isinstance(self._registry, MetricsOff):
            self._registry.register(gauges)

    def outcomes(self, backend: str) -> dict[Outcome, Counter]:
        return {outcome: self.requests.labels(backend, outcome) for outcome in OUTCOMES}

    def duration_of(self, backend: str) -> Histogram:
        return self.duration.labels(backend)


class BackendGauges(Collector):
    """Outstanding calls and circuit state of each backend, read when Prometheus scrapes."""

    def __init__(
        self, read: Callable[[], Sequence[tuple[str, int, CircuitState]]]
    ) -> None:  # (name, outstanding, state) per backend
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        outstanding = GaugeMetricFamily(
            "infergate_ai_backend_outstanding",
            "Model calls in flight per backend.",
            labels=["backend"],
        )
        state = GaugeMetricFamily(
            "infergate_ai_backend_circuit_state",
            "1 for the state each backend's circuit breaker is in, 0 for the others.",
            labels=["backend", "state"],
        )
        for name, in_flight, current in self._read():
            outstanding.add_metric([name], in_flight)
            for each in CircuitState:
                state.add_metric([name, each.value], 1 if each is current else 0)
        return [outstanding, state]
