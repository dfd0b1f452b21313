"""What a backend's failure does to a call: retried once before the first byte, never after;
a model missing on one backend takes it out for that model only; /ai/models and /readyz over
several backends (ai-service over three real Ollama-protocol servers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from backend_fleet import (
    HEADERS,
    Fleet,
    counts,
    fleet_settings,
    generate,
    metric,
    service,
    stream_events,
    wait_until,
)


def everywhere(fleet: Fleet, tmp_path: Path) -> Path:
    return fleet.routes_file(tmp_path, {}, default=[{"name": n} for n in ("a", "b", "c")])


async def test_a_5xx_before_the_first_byte_is_retried_once_on_another_backend(
    fleet: Fleet, tmp_path: Path
) -> None:
    routes = fleet.routes_file(tmp_path, {"llama3": [{"name": "a"}, {"name": "b", "priority": 1}]})
    await fleet.control("a").configure(fail_status=500)
    async with service(fleet_settings(routes)) as ai:
        answer = await generate(ai)
        assert answer.status_code == 200
        assert answer.json()["backend"] == "b"
        assert await fleet.chat_calls() == {"a": 1, "b": 1, "c": 0}
        events = await stream_events(ai)
        assert events[-1]["backend"] == "b"
        assert await fleet.chat_calls() == {"a": 2, "b": 2, "c": 0}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_is_retried_at_most_once(fleet: Fleet, tmp_path: Path, stream: bool) -> None:
    for name in ("a", "b", "c"):
        await fleet.control(name).configure(fail_status=503)
    body = {"messages": [{"role": "user", "content": "x"}], "maxTokens": 5, "stream": stream}
    async with service(fleet_settings(everywhere(fleet, tmp_path))) as ai:
        answer = await ai.post("/ai/generate", json=body, headers=HEADERS)
    assert answer.status_code == 503
    assert answer.json()["code"] == "llm_error"
    assert sum((await fleet.chat_calls()).values()) == 2


async def test_a_failure_after_the_first_chunk_is_not_retried(fleet: Fleet, tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        await fleet.control(name).configure(fail_mid_stream=True)
    async with service(fleet_settings(everywhere(fleet, tmp_path))) as ai:
        events = await stream_events(ai)
    assert events[0]["type"] == "delta"
    assert events[-1]["type"] == "error"
    assert sum((await fleet.chat_calls()).values()) == 1


async def test_a_model_missing_on_one_backend_takes_it_out_for_that_model_only(
    fleet: Fleet, tmp_path: Path
) -> None:
    await fleet.control("a").configure(models=["llama3:latest"])
    await fleet.control("b").configure(models=["other:latest"])
    await fleet.control("c").configure(models=["llama3:latest", "other:latest"])
    async with service(fleet_settings(everywhere(fleet, tmp_path))) as ai:
        llama = [await generate(ai) for _ in range(40)]
        assert {a.status_code for a in llama} == {200}
        assert counts(llama)["b"] == 0
        assert (await fleet.chat_calls())["b"] <= 1  # one 404, then never again for llama3
        other = [await generate(ai, model="other") for _ in range(40)]
        assert {a.status_code for a in other} == {200}
        assert counts(other)["a"] == 0
        assert counts(other)["b"] >= 10  # still serving the model it has
        b_calls = (await fleet.chat_calls())["b"]
        assert b_calls >= 2
        await fleet.control("b").configure(models=["llama3:latest", "other:latest"])

        async def b_serves_llama3_again() -> bool:
            return bool((await generate(ai)).json()["backend"] == "b")

        await wait_until(b_serves_llama3_again, what="the probe to give llama3 back to b")


async def test_a_model_no_backend_has_is_404_after_one_retry(fleet: Fleet, tmp_path: Path) -> None:
    async with service(fleet_settings(everywhere(fleet, tmp_path))) as ai:
        answer = await generate(ai, model="absent")
    assert answer.status_code == 404
    assert answer.json()["code"] == "model_not_found"
    assert sum((await fleet.chat_calls()).values()) == 2


async def test_a_model_without_a_route_is_404_without_a_call(fleet: Fleet, tmp_path: Path) -> None:
    routes = fleet.routes_file(tmp_path, {"llama3": [{"name": "a"}]})
    async with service(fleet_settings(routes)) as ai:
        answer = await generate(ai, model="elsewhere")
    assert answer.status_code == 404
    assert sum((await fleet.chat_calls()).values()) == 0


async def test_models_are_the_union_of_what_routed_backends_list(
    fleet: Fleet, tmp_path: Path
) -> None:
    await fleet.control("a").configure(models=["llama3:latest"])
    await fleet.control("b").configure(models=["other:latest", "hidden:latest"])
    await fleet.control("c").configure(models=["llama3:latest", "extra:7b"])
    routes = fleet.routes_file(
        tmp_path,
        {
            "llama3": [{"name": "a"}, {"name": "c"}],
            "other": [{"name": "b"}],
            "extra:7b": [{"name": "c"}],
        },
    )
    async with service(fleet_settings(routes)) as ai:
        listed = (await ai.get("/ai/models", headers=HEADERS)).json()
        fleet.stop("c")
        without_c = (await ai.get("/ai/models", headers=HEADERS)).json()
    assert listed["models"] == ["extra:7b", "llama3", "other"]  # "hidden" is routed nowhere
    assert [d["name"] for d in listed["details"]] == listed["models"]
    assert without_c["models"] == ["llama3", "other"]


async def test_readiness_needs_a_backend_for_every_routed_model(
    fleet: Fleet, tmp_path: Path
) -> None:
    routes = fleet.routes_file(
        tmp_path, {"llama3": [{"name": "a"}, {"name": "b"}], "other": [{"name": "c"}]}
    )
    async with service(fleet_settings(routes)) as ai:
        ready = await ai.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {
            "llm": "ok",
            "backend:a": "closed",
            "backend:b": "closed",
            "backend:c": "closed",
            "model:llama3": "ok",
            "model:other": "ok",
        }
        fleet.stop("a")
        assert (await ai.get("/readyz")).status_code == 200
        fleet.stop("c")
        not_ready = await ai.get("/readyz")
    assert not_ready.status_code == 503
    checks = not_ready.json()["checks"]
    assert checks["backend:c"] == checks["backend:a"] == "unreachable"
    assert checks["model:other"] == "no_backend"
    assert checks["model:llama3"] == "ok"


async def test_a_refused_connection_takes_the_backend_out_at_once(
    fleet: Fleet, tmp_path: Path
) -> None:
    """One refusal opens its breaker (no further call waits on a server that is not there);
    the call itself was answered by another backend."""
    routes = fleet.routes_file(tmp_path, {"llama3": [{"name": "a"}, {"name": "b"}]})
    fleet.stop("a")
    async with service(fleet_settings(routes)) as ai:
        answers = [await generate(ai) for _ in range(12)]
        exposition = (await ai.get("/metrics")).text
    assert [answer.status_code for answer in answers] == [200] * 12
    assert counts(answers) == {"a": 0, "b": 12, "c": 0}
    assert (
        metric(exposition, "infergate_ai_backend_requests_total", backend="a", outcome="error") == 1
    )
    assert metric(exposition, "infergate_ai_backend_circuit_state", backend="a", state="open") == 1
