"""One model backend: its client (Ollama or OpenAI-compatible), circuit breaker, calls in flight,
latency and the models it said it lacks, with what each call's end does to them and its metrics."""

from __future__ import annotations

import asyncio
from time import perf_counter

import httpx
import ollama
import pydantic
from infergate_common.circuit_breaker import CircuitBreaker

from ai_service.backend_metrics import BackendMetrics, Outcome
from ai_service.openai_backend import OpenAiClient
from ai_service.routing_config import canonical_model

# What a backend is called through: Ollama's API, or an OpenAI-compatible one behind it.
LlmServerClient = ollama.AsyncClient | OpenAiClient
EWMA_ALPHA = 0.2
# A backend's latency figure fades by half every this many seconds it is not updated: one slow
# answer must not keep a backend out of every tie for good (it is only measured when chosen).
LATENCY_HALF_LIFE_S = 5.0
# Failures before any output that another backend may not share: tried once more elsewhere.
RETRYABLE: frozenset[Outcome] = frozenset({"error", "timeout", "model_missing"})


class Backend:
    __slots__ = (
        "_duration",
        "_outcomes",
        "_retries",
        "breaker",
        "client",
        "ewma_at",
        "ewma_s",
        "missing",
        "name",
        "outstanding",
        "timeout",
    )

    def __init__(
        self,
        *,
        name: str,
        client: LlmServerClient,
        timeout: float,
        breaker: CircuitBreaker,
        metrics: BackendMetrics,
    ) -> None:
        self.name = name
        self.client = client
        self.timeout = timeout
        self.breaker = breaker
        self.outstanding = 0
        self.ewma_s = 0.0
        self.ewma_at = 0.0  # perf_counter of its last update
        self.missing: set[str] = set()  # canonical names of models it answered 404 for
        self._outcomes = metrics.outcomes(name)
        self._duration = metrics.duration_of(name)
        self._retries = metrics.retries.labels(name)

    def usable_for(self, model: str) -> bool:
        return self.breaker.allows_call() and (not self.missing or model not in self.missing)

    def latency(self, now: float) -> float:
        """The EWMA of its time to the first byte, faded by the time since it was measured."""
        fading: float = 0.5 ** ((now - self.ewma_at) / LATENCY_HALF_LIFE_S)
        return self.ewma_s * fading

    def begin(self) -> float:
        self.outstanding += 1
        return perf_counter()

    def answered(self, began: float) -> None:
        """The first byte (a whole answer, or a stream's first chunk) arrived."""
        now = perf_counter()
        faded = self.latency(now)
        self.ewma_s = faded + EWMA_ALPHA * (now - began - faded)
        self.ewma_at = now
        self.breaker.record_success()

    def end(self, began: float, outcome: Outcome) -> None:
        self.outstanding -= 1
        self._duration.observe(perf_counter() - began)
        self._outcomes[outcome].inc()

    def failed(self, exc: BaseException, model: str) -> Outcome:
        """Judge a failed call: the breaker hears of 5xx, timeouts and lost connections (a
        connection that could not be made opens it at once); a 404
        takes this backend out for that model only (until a probe finds the model)."""
        outcome = classify(exc)
        if isinstance(exc, ConnectionError | httpx.ConnectError):
            self.breaker.trip()  # refused or unresolvable: out of rotation until a probe answers
        elif outcome in ("error", "timeout"):
            self.breaker.record_failure()
        else:
            self.breaker.record_abandoned()
            if outcome == "model_missing":
                self.missing.add(canonical_model(model))
        return outcome

    def retried(self) -> None:
        self._retries.inc()


def classify(exc: BaseException) -> Outcome:
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(exc, ollama.ResponseError):
        if exc.status_code == 404:
            return "model_missing"
        return "error" if exc.status_code >= 500 or exc.status_code < 400 else "rejected"
    if isinstance(exc, ConnectionError | httpx.TransportError | pydantic.ValidationError):
        return "error"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"
