"""A circuit breaker: stop sending work to something that keeps failing, then try it again.

Closed: calls pass; a run of `threshold` consecutive failures (5xx or timeouts) opens it. Open:
calls are refused until `cooldown_s` has passed (or an active probe half-opens it sooner).
Half-open: one trial call is let through; its success closes the circuit, its failure opens it
again. The gateway guards each model with one (`before_call` raises 503); ai-service guards each
model backend with one and routes around it (`allows_call` and `try_call` never raise).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import StrEnum

import structlog

from infergate_common.errors import UpstreamUnavailableError

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
        name: str = "",
    ) -> None:
        self._threshold = threshold
        self._on_change = on_change
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._name = name
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._awaits_probe = False  # tripped: only `half_open` (an active probe) reopens it
        self.state = CircuitState.CLOSED

    def before_call(self) -> None:
        """Let a call through, or refuse it with 503 while the circuit is open."""
        if self.try_call():
            return
        remaining = self._opened_at + self._cooldown_s - self._clock()
        retry_after = max(1, math.ceil(remaining))
        raise UpstreamUnavailableError(
            "The AI service is failing; requests are paused. Try again later.",
            code="circuit_open",
            headers={"Retry-After": str(retry_after)},
        )

    def allows_call(self) -> bool:
        """Whether `try_call` would let a call through now; changes nothing (for routing, which
        looks at several breakers and calls through one)."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.HALF_OPEN:
            return not self._probe_in_flight
        return not self._awaits_probe and self._clock() >= self._opened_at + self._cooldown_s

    def try_call(self) -> bool:
        """Let a call through (True), taking the half-open trial slot if it is the trial."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN and self.allows_call():
            self._move(CircuitState.HALF_OPEN)
        if self.state is CircuitState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def half_open(self) -> None:
        """An active probe found the other side answering: let the next call through as the
        trial, without waiting for the cooldown."""
        if self.state is CircuitState.OPEN:
            self._probe_in_flight = False
            self._awaits_probe = False
            self._move(CircuitState.HALF_OPEN)

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

    def trip(self) -> None:
        """Open at once, whatever the count, until an active probe finds the other side
        answering (`half_open`), not when the cooldown ends: the failure says the server is not
        there (a refused connection), and a call sent to find out would fail too. Only for a
        breaker whose owner probes."""
        self._probe_in_flight = False
        self._awaits_probe = True
        self._failures = max(self._failures, self._threshold)
        self._opened_at = self._clock()
        if self.state is not CircuitState.OPEN:
            self._move(CircuitState.OPEN)

    def record_abandoned(self) -> None:
        """The call ended with neither verdict (the client left): free the probe slot."""
        self._probe_in_flight = False

    def _move(self, state: CircuitState) -> None:
        _log.warning(
            "circuit_state_changed", previous=self.state.value, state=state.value, name=self._name
        )
        self.state = state
        self._on_change(state)
