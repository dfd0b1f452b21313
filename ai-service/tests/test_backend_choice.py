"""The choice of a backend for one call, and the breaker states it relies on (no I/O: the
backends' clients are never called)."""

from __future__ import annotations

from collections import Counter
from time import perf_counter

import ollama
from ai_service.backend import Backend
from ai_service.backend_metrics import BackendMetrics
from ai_service.backend_pool import BackendPool
from ai_service.routing_config import RouteTarget, RoutingConfig
from infergate_common.circuit_breaker import CircuitBreaker, CircuitState
from infergate_common.metrics import MetricsOff


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state_of(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state  # read afresh: mypy would keep the narrowing of an earlier assert


def pool_of(*targets: tuple[str, float, int], clock: Clock | None = None) -> BackendPool:
    """One model, `llama3`, over backends (name, weight, priority) at unused addresses."""
    config = RoutingConfig.everywhere(
        [f"http://{name}.test:1" for name, _, _ in targets], timeout=5.0, model="llama3"
    )
    route = tuple(
        RouteTarget(f"{name}.test:1", weight, priority) for name, weight, priority in targets
    )
    config = RoutingConfig(config.backends, {"llama3": route}, (), ("llama3",))
    return BackendPool.build(
        config,
        client_for=lambda spec: ollama.AsyncClient(host=spec.url),
        breaker_for=lambda name: CircuitBreaker(
            threshold=1, cooldown_s=10.0, clock=clock or Clock(), name=name
        ),
        metrics=BackendMetrics(MetricsOff()),
    )


def backend(pool: BackendPool, name: str) -> Backend:
    (found,) = [b for b in pool.backends if b.name == f"{name}.test:1"]
    return found


def chosen(pool: BackendPool, times: int, *, model: str = "llama3") -> Counter[str]:
    picks: Counter[str] = Counter()
    for _ in range(times):
        choice = pool.choose(model)
        assert choice is not None
        picks[choice.name.removesuffix(".test:1")] += 1
    return picks


def test_idle_backends_are_chosen_by_weight() -> None:
    picks = chosen(pool_of(("a", 1, 0), ("b", 3, 0)), 4000)
    assert 850 <= picks["a"] <= 1150, picks


def test_the_backend_with_fewer_calls_in_flight_per_weight_wins() -> None:
    pool = pool_of(("a", 2, 0), ("b", 1, 0))
    backend(pool, "a").outstanding = 3
    backend(pool, "b").outstanding = 1
    assert chosen(pool, 200) == Counter({"b": 200})  # 3/2 > 1/1
    backend(pool, "a").outstanding = 1
    assert chosen(pool, 200) == Counter({"a": 200})  # 1/2 < 1/1


def test_on_a_tie_a_clearly_faster_backend_wins() -> None:
    pool = pool_of(("a", 1, 0), ("b", 1, 0))
    now = perf_counter()
    backend(pool, "a").ewma_s, backend(pool, "a").ewma_at = 0.3, now
    backend(pool, "b").ewma_s, backend(pool, "b").ewma_at = 0.01, now
    assert chosen(pool, 200) == Counter({"b": 200})


def test_an_old_slow_measure_fades_so_the_backend_is_tried_again() -> None:
    """A backend is only measured when chosen: one slow answer a while ago must not keep it out
    of every tie."""
    pool = pool_of(("a", 1, 0), ("b", 1, 0))
    now = perf_counter()
    backend(pool, "a").ewma_s, backend(pool, "a").ewma_at = 0.3, now - 60  # twelve half-lives
    backend(pool, "b").ewma_s, backend(pool, "b").ewma_at = 0.01, now
    assert chosen(pool, 400)["a"] > 100


def test_open_backends_and_backends_lacking_the_model_are_skipped() -> None:
    pool = pool_of(("a", 1, 0), ("b", 1, 0), ("c", 1, 0))
    backend(pool, "a").breaker.record_failure()
    backend(pool, "b").missing.add("llama3")
    assert chosen(pool, 100) == Counter({"c": 100})
    assert chosen(pool, 100, model="llama3:latest") == Counter({"c": 100})


def test_the_next_priority_is_used_only_when_the_first_has_no_usable_backend() -> None:
    pool = pool_of(("a", 1, 0), ("b", 1, 0), ("c", 5, 1))
    assert chosen(pool, 200)["c"] == 0
    backend(pool, "a").breaker.record_failure()
    assert chosen(pool, 100) == Counter({"b": 100})
    backend(pool, "b").breaker.record_failure()
    assert chosen(pool, 100) == Counter({"c": 100})


def test_a_retry_avoids_the_backend_that_failed_and_may_find_none() -> None:
    pool = pool_of(("a", 1, 0), ("b", 1, 1))
    a, b = backend(pool, "a"), backend(pool, "b")
    assert {pool.choose("llama3", avoid=a) for _ in range(50)} == {b}
    single = pool_of(("a", 1, 0))
    assert single.choose("llama3", avoid=backend(single, "a")) is None


def test_with_every_backend_out_the_best_group_is_tried_anyway() -> None:
    pool = pool_of(("a", 1, 0), ("b", 1, 1))
    for each in pool.backends:
        each.breaker.record_failure()
    assert {pool.choose("llama3") for _ in range(20)} == {backend(pool, "a")}


def test_a_half_open_backend_takes_one_trial_call_at_a_time() -> None:
    clock = Clock()
    pool = pool_of(("a", 1, 0), ("b", 1, 0), clock=clock)
    a = backend(pool, "a")
    a.breaker.record_failure()
    a.breaker.half_open()  # a probe answered
    assert state_of(a.breaker) is CircuitState.HALF_OPEN
    picks = [pool.choose("llama3") for _ in range(100)]
    assert picks.count(a) == 1  # the trial; the rest wait for its verdict
    a.breaker.record_success()
    assert state_of(a.breaker) is CircuitState.CLOSED
    assert a in [pool.choose("llama3") for _ in range(100)]


def test_looking_at_a_breaker_takes_nothing_and_a_call_takes_the_trial() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=5, clock=clock)
    breaker.record_failure()
    assert not breaker.allows_call()
    clock.now += 5
    assert breaker.allows_call()
    assert breaker.allows_call()
    assert state_of(breaker) is CircuitState.OPEN  # still: only a call moves it
    assert breaker.try_call()
    assert state_of(breaker) is CircuitState.HALF_OPEN
    assert not breaker.allows_call()
    assert not breaker.try_call()
    breaker.record_failure()
    assert state_of(breaker) is CircuitState.OPEN
