"""The ollama client over the aiohttp transport, against real servers on loopback sockets.

The deterministic Ollama-protocol server (`tests/fake_ollama.py`, in its own process) paces,
delays and counts; a small raw-socket server here does what a well-behaved server never does
(dropping the connection mid-answer) and shows which headers and connections arrive.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Self

import httpx
import pytest
from ai_service.config import Settings
from ai_service.llm import LlmClient, create_ollama_client
from ai_service.main import create_app
from ai_service.schemas import GenerateRequest
from fastapi import FastAPI
from infergate_common.errors import AppError, UpstreamTimeoutError, UpstreamUnavailableError
from ollama_replies import chat_body
from pydantic import SecretStr

from tests.fake_ollama_fixtures import FakeOllamaControl, FakeOllamaProcess, free_port

TOKEN = "unit-test-internal-token-0123456789"
AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]
BODY = {"messages": [{"role": "user", "content": "Hello, model"}], "maxTokens": 50}


def request(*, stream: bool = False) -> GenerateRequest:
    return GenerateRequest.model_validate({**BODY, "stream": stream})


@asynccontextmanager
async def llm_at(url: str, *, seconds: float = 10.0) -> AsyncIterator[LlmClient]:
    async with create_ollama_client(url=url, timeout=seconds) as client:
        yield LlmClient(client, default_model="llama3")


async def events_of(llm: LlmClient) -> list[dict[str, Any]]:
    return [json.loads(line) async for line in await llm.stream(request(stream=True))]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOllamaProcess]:
    with FakeOllamaProcess() as process:
        yield process


@pytest.fixture
async def control(server: FakeOllamaProcess) -> AsyncIterator[FakeOllamaControl]:
    async with httpx.AsyncClient(timeout=10.0) as http:
        control = FakeOllamaControl(server.url, http)
        await control.reset()
        yield control
        await control.reset()


async def stats_when(
    control: FakeOllamaControl, key: str, value: int, *, tries: int = 100
) -> dict[str, Any]:
    """The server's counters once `key` reaches `value` (the server notices a close on its own)."""
    stats = await control.stats()
    for _ in range(tries):
        if stats[key] == value:
            break
        await asyncio.sleep(0.05)
        stats = await control.stats()
    return stats


async def test_generate_returns_the_text_and_counts_through_the_transport(
    server: FakeOllamaProcess, control: FakeOllamaControl
) -> None:
    await control.configure(prompt_tokens=11, completion_tokens=7)
    async with llm_at(server.url) as llm:
        result = await llm.generate(request())
        models = await llm.models()
    assert (result.output, result.promptTokens, result.completionTokens) == (
        "echo: Hello, model",
        11,
        7,
    )
    assert models == ["llama3"]
    sent = (await control.stats())["last_request"]
    assert (sent["options"]["num_predict"], sent["stream"]) == (50, False)


async def test_stream_delivers_the_first_chunk_while_the_model_is_still_generating(
    server: FakeOllamaProcess, control: FakeOllamaControl
) -> None:
    await control.configure(prompt_tokens=4, completion_tokens=5, chunk_delay_s=0.2)
    async with llm_at(server.url) as llm:
        events = await llm.stream(request(stream=True))
        first = json.loads(await anext(events))
        during = await control.stats()
        rest = [json.loads(line) async for line in events]
    assert first["type"] == "delta"
    # A buffering transport would hand over the first chunk only after the server finished.
    assert during["in_flight"] == 1
    assert [e["type"] for e in rest] == ["delta"] * 4 + ["done"]
    assert "".join(e.get("content", "") for e in [first, *rest]) == "echo: Hello, model"
    assert (rest[-1]["promptTokens"], rest[-1]["completionTokens"]) == (4, 5)


async def test_an_llm_slower_than_the_timeout_is_504(
    server: FakeOllamaProcess, control: FakeOllamaControl
) -> None:
    await control.configure(delay_s=1.5)
    async with llm_at(server.url, seconds=0.4) as llm:
        with pytest.raises(UpstreamTimeoutError) as whole:
            await llm.generate(request())
        with pytest.raises(UpstreamTimeoutError) as streamed:
            await llm.stream(request(stream=True))
    assert (whole.value.error_code, streamed.value.error_code) == ("llm_timeout", "llm_timeout")


async def test_a_pause_longer_than_the_timeout_mid_stream_ends_with_a_504_event(
    server: FakeOllamaProcess, control: FakeOllamaControl
) -> None:
    await control.configure(completion_tokens=5, chunk_delay_s=1.0)
    async with llm_at(server.url, seconds=0.4) as llm:
        events = await events_of(llm)
    assert events[0]["type"] == "delta"
    assert events[1:] == [
        {"type": "error", "status": 504, "code": "llm_timeout", "message": "AI service timeout"}
    ]


async def test_the_service_answers_504_when_the_llm_exceeds_ollama_timeout(
    server: FakeOllamaProcess, control: FakeOllamaControl, app_client: AppClient
) -> None:
    settings = Settings(internal_token=SecretStr(TOKEN), ollama_url=server.url, ollama_timeout=0.5)
    headers = {"x-internal-token": TOKEN}
    async with app_client(create_app(settings)) as client:
        fast = await client.post("/ai/generate", json=BODY, headers=headers)
        await control.configure(delay_s=1.5)
        slow = await client.post("/ai/generate", json=BODY, headers=headers)
    assert (fast.status_code, fast.json()["output"]) == (200, "echo: Hello, model")
    assert (slow.status_code, slow.json()["code"]) == (504, "llm_timeout")


async def test_a_refused_connection_is_503() -> None:
    async with llm_at(f"http://127.0.0.1:{free_port()}") as llm:
        with pytest.raises(UpstreamUnavailableError) as whole:
            await llm.generate(request())
        with pytest.raises(UpstreamUnavailableError) as streamed:
            await llm.stream(request(stream=True))
    assert (whole.value.error_code, streamed.value.error_code) == (
        "llm_unavailable",
        "llm_unavailable",
    )


async def test_an_error_status_keeps_its_meaning(
    server: FakeOllamaProcess, control: FakeOllamaControl
) -> None:
    await control.configure(models=["other:latest"])
    async with llm_at(server.url) as llm:
        with pytest.raises(AppError) as missing:
            await llm.generate(request())
        await control.configure(models=["llama3:latest"], fail_status=500)
        with pytest.raises(AppError) as failing:
            await llm.stream(request(stream=True))
    assert (missing.value.status_code, missing.value.error_code) == (404, "model_not_found")
    assert (failing.value.status_code, failing.value.error_code) == (503, "llm_error")


async def test_cancelling_a_stream_closes_the_upstream_connection(
    server: FakeOllamaProcess, control: FakeOllamaControl
) -> None:
    await control.configure(completion_tokens=20, chunk_delay_s=0.2)
    received: list[bytes] = []
    first = asyncio.Event()

    async def relay(events: AsyncIterator[bytes]) -> None:
        async for line in events:
            received.append(line)
            first.set()

    async with llm_at(server.url) as llm:
        # What Starlette does when the caller goes away: the task relaying the stream is cancelled.
        task = asyncio.create_task(relay(await llm.stream(request(stream=True))))
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = await stats_when(control, "disconnects", 1)
    assert (stats["disconnects"], stats["in_flight"]) == (1, 0)
    assert 1 <= len(received) < 20


async def test_cancelling_before_the_answer_starts_closes_the_upstream_connection(
    server: FakeOllamaProcess, control: FakeOllamaControl
) -> None:
    await control.configure(delay_s=5.0)
    async with llm_at(server.url) as llm:
        task = asyncio.create_task(llm.generate(request()))
        await stats_when(control, "in_flight", 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = await stats_when(control, "disconnects", 1)
    assert (stats["disconnects"], stats["in_flight"]) == (1, 0)


CHAT_REPLY = chat_body("whole", prompt_eval_count=2, eval_count=1)


class DroppingOllama:
    """Answers `/api/chat` whole over keep-alive, or streams one line and drops the connection."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[dict[str, str]] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while (body := await self._read_request(reader)) is not None:
                if body.get("stream") is False:
                    reply = json.dumps(CHAT_REPLY).encode()
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(reply)}\r\n"
                    writer.write(head.encode() + b"Content-Type: application/json\r\n\r\n" + reply)
                    await writer.drain()
                    continue
                line = json.dumps({**CHAT_REPLY, "done": False}).encode() + b"\n"
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                writer.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.2)  # the client reads the line, then the socket goes
                return
        finally:
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> dict[str, Any] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").strip().split("\r\n")[1:]
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        self.requests.append(headers)
        body: dict[str, Any] = json.loads(await reader.readexactly(int(headers["content-length"])))
        return body


async def test_a_server_that_drops_the_connection_mid_stream_gives_an_error_event() -> None:
    async with DroppingOllama() as dropping, llm_at(dropping.url) as llm:
        events = await events_of(llm)
    assert events[0] == {"type": "delta", "content": "whole"}
    assert events[1:] == [
        {"type": "error", "status": 503, "code": "llm_unavailable", "message": "LLM unavailable"}
    ]


async def test_calls_share_one_keep_alive_connection_and_carry_the_request_id(
    app_client: AppClient,
) -> None:
    async with DroppingOllama() as dropping:
        settings = Settings(internal_token=SecretStr(TOKEN), ollama_url=dropping.url)
        async with app_client(create_app(settings)) as client:
            answers = [
                await client.post(
                    "/ai/generate",
                    json=BODY,
                    headers={"x-internal-token": TOKEN, "x-request-id": f"trace-{n}"},
                )
                for n in range(3)
            ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert dropping.connections == 1
    assert [r.get("x-request-id") for r in dropping.requests] == ["trace-0", "trace-1", "trace-2"]
    # The headers the ollama client's httpx layer sets, no more and no fewer.
    assert sorted(dropping.requests[0]) == [
        "accept",
        "accept-encoding",
        "connection",
        "content-length",
        "content-type",
        "host",
        "user-agent",
        "x-request-id",
    ]
    assert dropping.requests[0]["host"] == dropping.url.removeprefix("http://")
    assert dropping.requests[0]["user-agent"].startswith("ollama-python/")
