"""Circuit breakers on the LLM path, one per model: stop sending work to a model that keeps
failing, without refusing the others (the breaker itself is `infergate_common.circuit_breaker`).
"""

from __future__ import annotations

from infergate_common.circuit_breaker import CircuitBreaker

from api_gateway.telemetry import GatewayMetrics


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
