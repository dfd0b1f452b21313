"""The response cache through nginx, with the test LLM: a repeated deterministic chat is answered
without the model, free by default, logged as CACHED, and a streamed hit replays the stream."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.fake_ollama_fixtures import FakeOllamaControl
from tests.helpers import usage

QUESTION = {"model": "llama3", "messages": [{"role": "user", "content": "Cache me"}]}


async def until_hit(
    api: httpx.AsyncClient, key: str, body: dict[str, Any], *, timeout_s: float = 10.0
) -> tuple[httpx.Response, list[httpx.Response]]:
    """Ask until the cache answers (it keeps an answer just after sending it): the hit, and the
    misses before it."""
    misses: list[httpx.Response] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = await api.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200, response.text
        if response.headers["x-infergate-cache"] == "hit":
            return response, misses
        misses.append(response)
    raise AssertionError("the cache never answered")


async def test_a_repeated_deterministic_chat_costs_no_model_call_and_no_tokens(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    before = (await llm.stats())["chat_calls"]
    hit, misses = await until_hit(api, api_key, {**QUESTION, "temperature": 0})
    assert misses, "the first answer came from the model"
    # Every miss (and only a miss) reached the model; the hit repeats the first answer.
    assert (await llm.stats())["chat_calls"] - before == len(misses)
    content = hit.json()["choices"][0]["message"]["content"]
    assert content == misses[0].json()["choices"][0]["message"]["content"]
    assert hit.json()["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 0}
    charged = sum(miss.json()["usage"]["total_tokens"] for miss in misses)
    assert (await usage(api, api_key))["usedTokens"] == charged
    log = await api.get("/v1/requests", params={"limit": 1}, headers={"x-api-key": api_key})
    [latest] = log.json()["data"]
    assert (latest["status"], latest["tokensUsed"]) == ("CACHED", 0)
    assert (latest["promptTokens"], latest["completionTokens"]) == (7, 5)


async def test_a_sampled_chat_is_never_answered_from_the_cache(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    before = (await llm.stats())["chat_calls"]
    for _ in range(3):
        response = await api.post(
            "/v1/chat/completions",
            json={**QUESTION, "temperature": 0.8},
            headers={"x-api-key": api_key},
        )
        assert response.headers["x-infergate-cache"] == "miss"
    assert (await llm.stats())["chat_calls"] - before == 3


def chunks(body: str) -> list[dict[str, Any]]:
    """The stream's chunks without what differs per response (id, creation time)."""
    events = [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data")]
    parsed = [json.loads(event) for event in events if event != "[DONE]"]
    return [{k: v for k, v in chunk.items() if k not in ("id", "created")} for chunk in parsed]


async def test_a_streamed_hit_replays_the_same_chunks(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    await llm.configure(reply="Four, as in 2 + 2 = 4.")
    body = {**QUESTION, "seed": 3, "stream": True}
    hit, misses = await until_hit(api, api_key, body)
    assert hit.headers["content-type"].startswith("text/event-stream")
    original = chunks(misses[0].text)
    assert len(original) > 2
    assert chunks(hit.text) == original
    assert hit.text.endswith("data: [DONE]\n\n")
