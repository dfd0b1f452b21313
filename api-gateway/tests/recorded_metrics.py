"""The gateway's metrics in a registry of their own, for tests to read what was counted."""

from __future__ import annotations

from api_gateway.telemetry import GatewayMetrics
from prometheus_client import CollectorRegistry


class Recorded:
    """The gateway's metrics in a registry of their own, to read what was counted."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = GatewayMetrics.create(self.registry, models=["llama3"])

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0
