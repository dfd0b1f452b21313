"""A small OpenAI-compatible server (/v1/models, /v1/chat/completions, plain and SSE) for the
`type = "openai"` backend tests: uvicorn in a thread on a free loopback port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.fake_ollama_fixtures import free_port

KEY = "sk-test-openai-key"
MODEL = "gpt-test"
USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def create_app(calls: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    def refused(request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return JSONResponse({"error": {"message": "bad key", "type": "auth"}}, 401)
        return None

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        return refused(request) or JSONResponse({"object": "list", "data": [{"id": MODEL}]})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        calls.append(body)
        if denied := refused(request):
            return denied
        if body["model"] != MODEL:
            return JSONResponse({"error": {"message": "no such model"}}, 404)
        if body.get("stream"):
            return StreamingResponse(_chunks(), media_type="text/event-stream")
        message = {"role": "assistant", "content": "abc"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return JSONResponse({"id": "x", "choices": [choice], "usage": USAGE})

    return app


async def _chunks() -> AsyncIterator[bytes]:
    for text in ("a", "b", "c"):
        chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    yield f"data: {json.dumps(last)}\n\n".encode()
    yield f"data: {json.dumps({'choices': [], 'usage': USAGE})}\n\n".encode()
    yield b"data: [DONE]\n\n"


@contextmanager
def running() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The server's base URL and the bodies of the chat calls it received."""
    calls: list[dict[str, Any]] = []
    port = free_port()
    config = uvicorn.Config(create_app(calls), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake OpenAI server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", calls
    finally:
        server.should_exit = True
        thread.join(timeout=10)
