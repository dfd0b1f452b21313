"""Circuit breakers on the LLM path, one per model: stop sending work to a model that keeps
failing, without refusing the others.

Closed: calls pass; a run of `threshold` consecutive failures (5xx or timeouts) opens it. Open:
calls are refused at once (503 with Retry-After) until `cooldown_s` has passed. Half-open: one
probe call is let through; its success closes the circuit, its failure opens it again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import StrEnum

import structlog
from infergate_common.errors import UpstreamUnavailableError

from api_gateway.telemetry import GatewayMetrics

_log = structlog.get_logger("circuit_breaker")


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] = lambda _: None,
    ) -> None:
        self._threshold = threshold
        self._on_change = on_change
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.state = CircuitState.CLOSED

    def before_call(self) -> None:
        """Let a call through, or refuse it with 503 while the circuit is open."""
        if self.state is CircuitState.CLOSED:
            return
        remaining = self._opened_at + self._cooldown_s - self._clock()
        if self.state is CircuitState.OPEN and remaining <= 0:
            self._move(CircuitState.HALF_OPEN)
        if self.state is CircuitState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return
        retry_after = max(1, math.ceil(remaining))
        raise UpstreamUnavailableError(
            "The AI service is failing; requests are paused. Try again later.",
            code="circuit_open",
            headers={"Retry-After": str(retry_after)},
        )

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        if self.state is not CircuitState.CLOSED:
            self._move(CircuitState.CLOSED)

    def record_failure(self) -> None:
        self._probe_in_flight = False
        self._failures += 1
        if self.state is CircuitState.HALF_OPEN or self._failures >= self._threshold:
            self._opened_at = self._clock()
            self._move(CircuitState.OPEN)

    def record_abandoned(self) -> None:
        """The call ended with neither verdict (the client left): free the probe slot."""
        self._probe_in_flight = False

    def _move(self, state: CircuitState) -> None:
        _log.warning("circuit_state_changed", previous=self.state.value, state=state.value)
        self.state = state
        self._on_change(state)


class CircuitBreakers:
    """One breaker per model (the allow-list bounds how many), made on first use; each state
    change is shown in `infergate_circuit_breaker_state`."""

    def __init__(self, *, threshold: int, cooldown_s: float, metrics: GatewayMetrics) -> None:
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._metrics = metrics
        self._breakers: dict[str, CircuitBreaker] = {}

    def for_model(self, model: str) -> CircuitBreaker:
        breaker = self._breakers.get(model)
        if breaker is None:
            breaker = CircuitBreaker(
                threshold=self._threshold,
                cooldown_s=self._cooldown_s,
                on_change=lambda state: self._metrics.set_circuit_state(model, state.value),
            )
            self._breakers[model] = breaker
        return breaker
