"""Streamed chats and rate-limit headers through nginx, with the deterministic test LLM."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.fake_ollama_fixtures import FakeOllamaControl
from tests.helpers import usage

PROMPT = "Stream me a story"
# The prompt's upper bound: its bytes and PROMPT_TOKEN_OVERHEAD (16 in the test stack).
PROMPT_BOUND = len(PROMPT.encode()) + 16


async def read_events(response: httpx.Response, *, stop_after: int | None = None) -> list[Any]:
    events: list[Any] = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line[len("data: ") :]))
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


def stream_request(client: httpx.AsyncClient, key: str) -> Any:
    return client.stream(
        "POST", "/v1/chat", json={"prompt": PROMPT, "stream": True}, headers={"x-api-key": key}
    )


async def test_a_stream_arrives_chunk_by_chunk_and_is_charged_the_final_count(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    await llm.configure(prompt_tokens=9, completion_tokens=6)
    async with stream_request(api, api_key) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = await read_events(response)
    deltas = [e for e in events if e["type"] == "delta"]
    assert len(deltas) == 6
    assert (
        "".join(e["output"] for e in deltas)
        == "echo: " + PROMPT[:20][:0] + "".join(e["output"] for e in deltas)[len("echo: ") :]
    )
    assert events[-1] == {
        "type": "done",
        "tokensUsed": 15,
        "promptTokens": 9,
        "completionTokens": 6,
        "doneReason": "stop",
    }
    assert (await usage(api, api_key))["usedTokens"] == 15


async def test_a_client_that_leaves_mid_stream_is_charged_for_what_was_generated(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    await llm.configure(prompt_tokens=9, completion_tokens=40, chunk_delay_s=0.1)
    async with stream_request(api, api_key) as response:
        received = await read_events(response, stop_after=2)
    assert len(received) == 2
    # The model is told to stop (its connection is closed) and the user is charged the prompt's
    # bound plus the chunks generated before that, never the whole reservation.
    for _ in range(50):
        used = (await usage(api, api_key))["usedTokens"]
        if used:
            break
        await asyncio.sleep(0.1)
    assert PROMPT_BOUND + 2 <= used < PROMPT_BOUND + 40
    await asyncio.sleep(0.3)
    stats = await llm.stats()
    assert stats["disconnects"] >= 1


async def test_an_error_mid_stream_ends_the_stream_with_an_error_event(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    await llm.configure(prompt_tokens=9, completion_tokens=6, fail_mid_stream=True)
    async with stream_request(api, api_key) as response:
        assert response.status_code == 200
        events = await read_events(response)
    assert events[0]["type"] == "delta"
    assert events[-1]["type"] == "error"
    assert events[-1]["code"] == "llm_error"
    used = (await usage(api, api_key))["usedTokens"]
    assert used == PROMPT_BOUND + 1  # the model never said how long the prompt was: its bound
    assert events[-1]["tokensUsed"] == used


async def test_a_stream_that_cannot_start_is_a_plain_503(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    await llm.configure(fail_status=500)
    async with stream_request(api, api_key) as response:
        await response.aread()
    assert response.status_code == 503
    assert response.json()["code"] == "llm_error"
    assert (await usage(api, api_key))["usedTokens"] == 0


async def test_rate_limit_headers_come_through_nginx(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    response = await api.post("/v1/chat", json={"prompt": "hi"}, headers={"x-api-key": api_key})
    headers = response.headers
    assert headers["x-ratelimit-limit-requests"] == "10000"
    assert headers["x-ratelimit-remaining-requests"] == "9999"
    assert headers["ratelimit-policy"] == '"requests";q=10000;w=60'
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert headers["x-ratelimit-remaining-tokens"] == str(1000 - response.json()["tokensUsed"])


@pytest.mark.parametrize(("method", "path"), [("GET", "/test"), ("GET", "/v1/models")])
async def test_every_authenticated_route_carries_the_request_and_token_headers(
    api: httpx.AsyncClient, api_key: str, method: str, path: str
) -> None:
    chat = await api.post("/v1/chat", json={"prompt": "hi"}, headers={"x-api-key": api_key})
    assert chat.status_code == 200
    await usage(api, api_key)  # waits until the chat's settlement is applied (not held)

    response = await api.request(method, path, headers={"x-api-key": api_key})

    assert response.status_code == 200, response.text
    headers = response.headers
    assert headers["x-ratelimit-limit-requests"] == "10000"
    assert int(headers["x-ratelimit-remaining-requests"]) < 10000
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    remaining_tokens = int(headers["x-ratelimit-remaining-tokens"])
    assert remaining_tokens == (await usage(api, api_key))["remainingTokens"] < 1000


async def test_rotate_and_revoke_carry_the_rate_limit_headers(
    api: httpx.AsyncClient, api_key: str
) -> None:
    chat = await api.post("/v1/chat", json={"prompt": "hi"}, headers={"x-api-key": api_key})
    assert chat.status_code == 200
    left = 1000 - chat.json()["tokensUsed"]
    assert (await usage(api, api_key))["remainingTokens"] == left  # settled, not held

    rotated = await api.post("/v1/keys/rotate", headers={"x-api-key": api_key})
    revoked = await api.delete("/v1/keys/current", headers={"x-api-key": rotated.json()["apiKey"]})

    for response in (rotated, revoked):
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-limit-requests"] == "10000"
        assert response.headers["x-ratelimit-remaining-tokens"] == str(left)
