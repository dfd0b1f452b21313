"""Spreading one model over several backends: weights, load, failover, priorities (ai-service
over three real Ollama-protocol servers)."""

from __future__ import annotations

from pathlib import Path

import httpx
from backend_fleet import (
    Fleet,
    concurrently,
    counts,
    fleet_settings,
    generate,
    metric,
    service,
    stream_events,
    wait_until,
)


def one_group(fleet: Fleet, tmp_path: Path, *weights: float) -> Path:
    entries = [{"name": name, "weight": w} for name, w in zip("abc", weights, strict=True)]
    return fleet.routes_file(tmp_path, {"llama3": entries})


async def test_calls_follow_the_weights(fleet: Fleet, tmp_path: Path) -> None:
    async with service(fleet_settings(one_group(fleet, tmp_path, 1, 1, 2))) as ai:
        answers = [await generate(ai) for _ in range(400)]
    assert all(answer.status_code == 200 for answer in answers)
    spread = counts(answers)
    assert abs(spread["a"] - 100) <= 40, spread
    assert abs(spread["b"] - 100) <= 40, spread
    assert abs(spread["c"] - 200) <= 45, spread
    assert await fleet.chat_calls() == spread  # one upstream call per answer


async def test_a_slow_backend_gets_clearly_less_work_under_concurrency(
    fleet: Fleet, tmp_path: Path
) -> None:
    await fleet.control("b").configure(delay_s=0.3)
    async with service(fleet_settings(one_group(fleet, tmp_path, 1, 1, 1))) as ai:
        answers = await concurrently(150, lambda _: generate(ai), width=12)
    assert all(answer.status_code == 200 for answer in answers)
    spread = counts(answers)
    assert spread["b"] * 3 < min(spread["a"], spread["c"]), spread


async def test_a_backend_stopped_mid_load_is_routed_around_and_its_circuit_opens(
    fleet: Fleet, tmp_path: Path
) -> None:
    async with service(fleet_settings(one_group(fleet, tmp_path, 1, 1, 1))) as ai:

        async def call(index: int) -> httpx.Response:
            if index == 60:
                fleet.stop("b")
            return await generate(ai)

        answers = await concurrently(240, call, width=8)
        assert [a.status_code for a in answers] == [200] * 240  # retried before the first byte
        assert counts(answers[120:])["b"] == 0
        metrics = (await ai.get("/metrics")).text
        assert metric(metrics, "infergate_ai_backend_circuit_state", backend="b", state="open") == 1
        assert (metric(metrics, "infergate_ai_backend_retries_total", backend="b") or 0) >= 1
        ready = (await ai.get("/readyz")).json()
        assert ready["checks"]["backend:b"] == "unreachable"
        assert ready["status"] == "ready"  # a and c serve llama3


async def test_the_next_priority_takes_over_only_when_the_first_is_down_and_gives_back(
    fleet: Fleet, tmp_path: Path
) -> None:
    routes = fleet.routes_file(
        tmp_path,
        {"llama3": [{"name": "a"}, {"name": "b"}, {"name": "c", "priority": 1}]},
    )
    async with service(fleet_settings(routes)) as ai:
        fleet.stop("a")
        first = [await generate(ai) for _ in range(30)]
        assert {a.status_code for a in first} == {200}
        assert counts(first)["b"] == 30  # a is down but b, of the same priority, is not
        fleet.stop("b")
        second = [await generate(ai) for _ in range(30)]
        assert {a.status_code for a in second} == {200}
        assert counts(second)["c"] == 30
        fleet.start("a")
        fleet.start("b")

        async def both_back() -> bool:
            checks = (await ai.get("/readyz")).json()["checks"]
            await generate(ai)
            return bool(checks["backend:a"] == checks["backend:b"] == "closed")

        await wait_until(both_back, what="a and b closed again after their probes")
        before = (await fleet.chat_calls())["c"]
        third = [await generate(ai) for _ in range(30)]
        assert counts(third)["c"] == 0
        assert (await fleet.chat_calls())["c"] == before


async def test_the_answer_and_the_streams_done_event_name_the_backend(
    fleet: Fleet, tmp_path: Path
) -> None:
    routes = fleet.routes_file(tmp_path, {"llama3": [{"name": "b"}]})
    async with service(fleet_settings(routes)) as ai:
        answer = await generate(ai)
        events = await stream_events(ai)
        metrics = (await ai.get("/metrics")).text
    assert answer.json()["backend"] == "b"
    assert events[-1]["type"] == "done"
    assert events[-1]["backend"] == "b"
    assert metric(metrics, "infergate_ai_backend_requests_total", backend="b", outcome="ok") == 2
    assert metric(metrics, "infergate_ai_backend_outstanding", backend="b") == 0
    assert metric(metrics, "infergate_ai_backend_circuit_state", backend="b", state="closed") == 1
