"""Prometheus metrics, per app: every service serves its own at `GET /metrics` (its internal port,
never routed by nginx, and like `/healthz` without the internal token).

Each app has its own registry (several apps can live in one test process), made with the app and
handed to whatever records into it. Labels are bounded by construction: route templates (never
raw paths), status classes, model names from the allow-list, downstream service names, fixed
outcome words. Never a user id, key, email, request id or prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, cast

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest

# No `*_created` series next to every counter and histogram: half the series, nothing lost.
disable_created_metrics()  # type: ignore[no-untyped-call]


class MetricsOff(CollectorRegistry):
    """The registry of a process started with METRICS_ENABLED=false: the metrics made for it
    (with `counter`, `gauge`, `histogram`) record nothing, and /metrics is not served."""


class _Off:
    """A metric that records nothing: every call is accepted and ignored."""

    def labels(self, *_: Any, **__: Any) -> _Off:
        return self

    def inc(self, *_: Any, **__: Any) -> None:
        return None

    dec = set = observe = inc


_OFF = _Off()


def counter(
    name: str, documentation: str, labels: Sequence[str] = (), *, registry: CollectorRegistry
) -> Counter:
    """A Counter in `registry`, or one that records nothing when metrics are off."""
    if isinstance(registry, MetricsOff):
        return cast(Counter, _OFF)
    return Counter(name, documentation, labels, registry=registry)


def gauge(
    name: str, documentation: str, labels: Sequence[str] = (), *, registry: CollectorRegistry
) -> Gauge:
    if isinstance(registry, MetricsOff):
        return cast(Gauge, _OFF)
    return Gauge(name, documentation, labels, registry=registry)


def histogram(
    name: str,
    documentation: str,
    labels: Sequence[str] = (),
    *,
    buckets: Sequence[float],
    registry: CollectorRegistry,
) -> Histogram:
    if isinstance(registry, MetricsOff):
        return cast(Histogram, _OFF)
    return Histogram(name, documentation, labels, buckets=buckets, registry=registry)


# Seconds: from a millisecond to a long model call.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)


@dataclass(frozen=True)
class HttpMetrics:
    """What the request middleware records for every HTTP request of a service."""

    requests: Counter
    duration: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> HttpMetrics:
        labels = ["service", "route", "method", "status_class"]
        return cls(
            requests=counter(
                "infergate_http_requests_total",
                "HTTP requests answered, by route template and status class.",
                labels,
                registry=registry,
            ),
            duration=histogram(
                "infergate_http_request_duration_seconds",
                "Time to answer an HTTP request (to the end of its body), by route template.",
                ["service", "route", "method"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class InternalCallMetrics:
    """Calls from one service to another (recorded by the internal HTTP client)."""

    duration: Histogram
    errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> InternalCallMetrics:
        return cls(
            duration=histogram(
                "infergate_internal_call_duration_seconds",
                "Calls to an internal service, by downstream and outcome (ok or error).",
                ["downstream", "outcome"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            errors=counter(
                "infergate_internal_call_errors_total",
                "Failed calls to an internal service: timeout, unavailable, or an error status.",
                ["downstream", "kind"],
                registry=registry,
            ),
        )


def lifespan_registry(app_registry: CollectorRegistry, stack: AsyncExitStack) -> CollectorRegistry:
    """A registry for what one run of a lifespan records, served with the app's (at /metrics)
    until the lifespan ends: an app started again (tests do) registers its metrics afresh."""
    if isinstance(app_registry, MetricsOff):
        return MetricsOff()
    registry = CollectorRegistry(auto_describe=True)
    app_registry.register(registry)  # a registry collects like a collector
    stack.callback(app_registry.unregister, registry)
    return registry


def metrics_router(registry: CollectorRegistry) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus text format: this process's metrics."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def status_class(status: int) -> str:
    return f"{status // 100}xx"
