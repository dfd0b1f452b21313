"""A `type = "openai"` backend: an OpenAI-compatible server in a model's route, next to Ollama
ones (a real server in a thread, ai-service in-process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_fleet import HEADERS, fleet_settings, generate, service, stream_events
from fake_openai import KEY, MODEL, running
from infergate_common.runner import invalid_settings
from pydantic import ValidationError

OpenAi = tuple[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[OpenAi]:
    with running() as server:
        yield server


def routes(tmp_path: Path, url: str, *, key_env: str = "TEST_OPENAI_KEY") -> Path:
    path = tmp_path / "routes.toml"
    path.write_text(
        f'[[models."{MODEL}"]]\nurl = "{url}"\nname = "cloud"\ntype = "openai"\n'
        f'api_key_env = "{key_env}"\n'
        # Nothing listens there: a call retried to it would fail as llm_unavailable.
        f'[[models."{MODEL}"]]\nurl = "http://127.0.0.1:9"\nname = "down"\npriority = 1\n'
        '[[default]]\nurl = "http://127.0.0.1:9"\nname = "down"\n'
    )
    return path


async def test_an_openai_backend_answers_whole_and_streamed_with_its_counts(
    openai_server: OpenAi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, calls = openai_server
    monkeypatch.setenv("TEST_OPENAI_KEY", KEY)
    async with service(fleet_settings(routes(tmp_path, url))) as ai:
        answer = await generate(ai, model=MODEL)
        events = await stream_events(ai, model=MODEL)
        listed = (await ai.get("/ai/models", headers=HEADERS)).json()
    assert answer.status_code == 200
    assert answer.json() == {
        "output": "abc",
        "tokens": 12,
        "promptTokens": 9,
        "completionTokens": 3,
        "model": MODEL,
        "doneReason": "stop",
        "backend": "cloud",
    }
    assert [e["content"] for e in events if e["type"] == "delta"] == ["a", "b", "c"]
    assert events[-1]["type"] == "done"
    assert (events[-1]["promptTokens"], events[-1]["completionTokens"]) == (9, 3)
    assert events[-1]["doneReason"] == "length"
    assert calls[-2]["max_tokens"] == 5
    assert calls[-1]["stream_options"] == {"include_usage": True}
    assert MODEL in listed["models"]


async def test_a_refused_key_is_an_upstream_error_not_retried_as_a_missing_model(
    openai_server: OpenAi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, calls = openai_server
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-wrong")
    before = len(calls)
    async with service(fleet_settings(routes(tmp_path, url))) as ai:
        answer = await generate(ai, model=MODEL)
    assert answer.status_code == 503
    assert answer.json()["code"] == "llm_error"  # the 401's, not the priority-1 backend's
    assert len(calls) == before + 1


def test_an_openai_backend_needs_its_key_variable_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_OPENAI_KEY_UNSET", raising=False)
    path = routes(tmp_path, "http://127.0.0.1:1", key_env="TEST_OPENAI_KEY_UNSET")
    with pytest.raises(ValidationError) as raised:
        fleet_settings(path)
    (line,) = invalid_settings(raised.value)
    assert line.endswith("api_key_env TEST_OPENAI_KEY_UNSET is not set")
