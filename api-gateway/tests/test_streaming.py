"""Streamed chats: SSE out, NDJSON in from the ai-service, settled from the final counts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from api_gateway.main import create_app
from fastapi import FastAPI
from gateway_downstream import DONE, VALID_KEY, Downstream, gateway_settings

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


def ndjson(*events: dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    return lambda _: httpx.Response(200, content=body)


@pytest.fixture
async def gateway(
    app_client: AppClient, redis_port: int, redis_client: redis.Redis, downstream: Downstream
) -> AsyncIterator[httpx.AsyncClient]:
    settings = gateway_settings(redis_port)
    async with app_client(create_app(settings, transport=downstream.transport())) as client:
        yield client


async def sse(client: httpx.AsyncClient) -> tuple[httpx.Response, list[tuple[str, dict[str, Any]]]]:
    response = await client.post(
        "/v1/chat", json={"prompt": "hello", "stream": True}, headers={"x-api-key": VALID_KEY}
    )
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return response, events


async def test_a_streamed_chat_sends_deltas_then_done_and_settles_the_final_counts(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    downstream.override(
        "ai",
        "/ai/generate",
        ndjson({"type": "delta", "content": "Hel"}, {"type": "delta", "content": "lo"}, DONE),
    )
    response, events = await sse(gateway)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert [data for _, data in events] == [
        {"type": "delta", "output": "Hel"},
        {"type": "delta", "output": "lo"},
        {
            "type": "done",
            "tokensUsed": 9,
            "promptTokens": 6,
            "completionTokens": 3,
            "doneReason": "stop",
        },
    ]
    assert downstream.bodies("ai", "/ai/generate")[0]["stream"] is True
    settled = await downstream.settled(1)
    assert [(s["status"], s["promptTokens"], s["completionTokens"]) for s in settled] == [
        ("SUCCESS", 6, 3)
    ]


async def test_an_error_mid_stream_ends_with_an_error_event_and_charges_what_was_sent(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    downstream.override(
        "ai",
        "/ai/generate",
        ndjson(
            {"type": "delta", "content": "Hel"},
            {"type": "error", "status": 503, "code": "llm_error", "message": "boom"},
        ),
    )
    response, events = await sse(gateway)
    assert events[0] == ("message", {"type": "delta", "output": "Hel"})
    kind, error = events[-1]
    assert (kind, error["type"], error["code"]) == ("error", "error", "llm_error")
    settled = await downstream.settled(1)
    assert len(settled) == 1
    bound = len(b"hello") + 64  # the model never reported the prompt's count
    assert (settled[0]["status"], settled[0]["promptTokens"], settled[0]["completionTokens"]) == (
        "UPSTREAM_ERROR",
        bound,
        1,
    )


async def test_a_stream_refused_before_it_starts_is_a_plain_json_error(
    gateway: httpx.AsyncClient, downstream: Downstream
) -> None:
    downstream.override(
        "ai",
        "/ai/generate",
        lambda _: httpx.Response(
            503, json={"message": "LLM unavailable", "code": "llm_unavailable"}
        ),
    )
    response = await gateway.post(
        "/v1/chat", json={"prompt": "hello", "stream": True}, headers={"x-api-key": VALID_KEY}
    )
    # The gateway commits to SSE only once the model answers: before that, a plain JSON error.
    assert response.status_code == 503
    assert response.json()["code"] == "llm_unavailable"
    settled = await downstream.settled(1)
    assert [(s["status"], s["completionTokens"]) for s in settled] == [("UPSTREAM_ERROR", 0)]
