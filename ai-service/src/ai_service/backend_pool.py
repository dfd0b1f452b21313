"""The model backends of each model's route, and the choice of one per call.

Choice, among the usable backends of a model's best priority group (usable: its circuit lets a
call through and it has not answered "model not found" for this model): power of two choices.
Two backends are drawn at random by weight; the one with fewer calls in flight per unit of weight
wins, and on a tie the first drawn, unless the other's latency (an EWMA of the time to the first
byte, fading by half every 5 s it is not measured) is less than a third of it. Idle, traffic
follows the weights; under load a slow or busy backend gets less. A draw is a bisect over
cumulative weights: no locks, no awaits, no allocation on the usual path. When no backend of any
group is usable, the call goes to one of the best group anyway (as a load balancer's panic
mode): the caller gets the backend's own error rather than a made-up one, and a single backend
behaves exactly as without a pool.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from time import perf_counter

import ollama
import structlog
from infergate_common.circuit_breaker import CircuitBreaker, CircuitState
from infergate_common.metrics import MetricsOff

from ai_service.backend import Backend, LlmServerClient
from ai_service.backend_metrics import BackendGauges, BackendMetrics
from ai_service.routing_config import BackendSpec, Route, RoutingConfig, canonical_model

_log = structlog.get_logger("backend_pool")
# A tie on load goes to the second draw only when its latency is below this share of the first's
# (clearly faster: latencies of equal backends differ by 2x now and then on a busy host).
EWMA_MARGIN = 1 / 3


class Group:
    """Backends of one priority in one model's route, with their weights in that route."""

    __slots__ = ("_cumulative", "_total", "backends", "weights")

    def __init__(self, backends: Sequence[Backend], weights: Sequence[float]) -> None:
        self.backends = tuple(backends)
        self.weights = tuple(weights)
        self._cumulative = list(accumulate(weights))
        self._total = self._cumulative[-1]

    def pick(self, model: str, avoid: Backend | None) -> Backend | None:
        count = len(self.backends)
        if count == 1:
            only = self.backends[0]
            return only if only is not avoid and only.usable_for(model) else None
        first = self._draw()
        second = self._draw()
        if second == first:  # two different backends, or the comparison is lost
            second = (first + 1 + int(random.random() * (count - 1))) % count
        a, b = self.backends[first], self.backends[second]
        if a is not avoid and b is not avoid and a.usable_for(model) and b.usable_for(model):
            return self._better(first, second)
        usable = [i for i, x in enumerate(self.backends) if x is not avoid and x.usable_for(model)]
        if len(usable) <= 1:
            return self.backends[usable[0]] if usable else None
        (first,) = random.choices(usable, weights=[self.weights[i] for i in usable])
        second = random.choice([i for i in usable if i != first])
        return self._better(first, second)

    def _draw(self) -> int:
        index = bisect_right(self._cumulative, random.random() * self._total)
        return min(index, len(self.backends) - 1)

    def _better(self, first: int, second: int) -> Backend:
        a, b = self.backends[first], self.backends[second]
        load_a = a.outstanding * self.weights[second]  # a.outstanding / weight_a, compared
        load_b = b.outstanding * self.weights[first]
        if load_a != load_b:
            return a if load_a < load_b else b
        now = perf_counter()
        return b if b.latency(now) < a.latency(now) * EWMA_MARGIN else a


Groups = tuple[Group, ...]


class BackendPool:
    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        routes: dict[str, Groups],
        default: Groups,
        checked_models: Sequence[str],
    ) -> None:
        self.backends = tuple(backends)
        self.checked_models = tuple(checked_models)
        self._routes = routes
        self._default = default

    @classmethod
    def build(
        cls,
        config: RoutingConfig,
        *,
        client_for: Callable[[BackendSpec], LlmServerClient],
        breaker_for: Callable[[str], CircuitBreaker],
        metrics: BackendMetrics,
    ) -> BackendPool:
        """One backend per configured name (its client from `client_for(spec)`)."""
        backends = {
            spec.name: Backend(
                name=spec.name,
                client=client_for(spec),
                timeout=spec.timeout,
                breaker=breaker_for(spec.name),
                metrics=metrics,
            )
            for spec in config.backends
        }
        pool = cls(
            list(backends.values()),
            routes={model: _groups(route, backends) for model, route in config.routes.items()},
            default=_groups(config.default, backends),
            checked_models=config.checked_models,
        )
        metrics.watch(BackendGauges(pool.gauge_values))
        return pool

    @classmethod
    def single(cls, client: ollama.AsyncClient, *, name: str = "default") -> BackendPool:
        """One backend serving every model, without metrics (tests, tools)."""
        breaker = CircuitBreaker(threshold=3, cooldown_s=10.0, name=name)
        backend = Backend(
            name=name,
            client=client,
            timeout=float("inf"),
            breaker=breaker,
            metrics=BackendMetrics(MetricsOff()),
        )
        return cls([backend], routes={}, default=(Group([backend], [1.0]),), checked_models=())

    def choose(self, model: str, *, avoid: Backend | None = None) -> Backend | None:
        """A backend for `model` (not `avoid`, the one a retry leaves); None if none is left."""
        key = canonical_model(model)
        groups = self._routes.get(key, self._default) if self._routes else self._default
        for group in groups:
            backend = group.pick(key, avoid)
            if backend is not None:
                backend.breaker.try_call()  # the half-open trial slot, if it is the trial
                return backend
        return _panic(groups, avoid)

    def groups_for(self, model: str) -> Groups:
        if not self._routes:
            return self._default
        return self._routes.get(canonical_model(model), self._default)

    def serves(self, backend: Backend, model: str) -> bool:
        """Whether calls for `model` may go to `backend` (it is in the model's route)."""
        return any(backend in group.backends for group in self.groups_for(model))

    def gauge_values(self) -> list[tuple[str, int, CircuitState]]:
        return [(b.name, b.outstanding, b.breaker.state) for b in self.backends]


def _groups(route: Route, backends: dict[str, Backend]) -> Groups:
    priorities = sorted({target.priority for target in route})
    return tuple(
        Group(
            [backends[t.backend] for t in route if t.priority == priority],
            [t.weight for t in route if t.priority == priority],
        )
        for priority in priorities
    )


def _panic(groups: Groups, avoid: Backend | None) -> Backend | None:
    for group in groups:
        candidates = [backend for backend in group.backends if backend is not avoid]
        if candidates:
            _log.debug("no_usable_backend", tried=candidates[0].name)
            return random.choice(candidates)
    return None
