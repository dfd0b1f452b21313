"""A deterministic Ollama-protocol server for integration tests and benchmarks.

Run: ``python tests/fake_ollama.py --host 127.0.0.1 --port 11434`` or import ``create_app()``.

It speaks the subset of Ollama's API the ai-service uses (``/``, ``/api/version``, ``/api/tags``,
``/api/show``, ``/api/chat``, ``/api/generate``) with Ollama's field names and error shapes, and
answers with a reply that is a fixed function of the request and exact, configured token counts.
A control API under ``/_control`` changes its behaviour at runtime (delays, failures, token counts,
models) and reports call counters.

It is a plain ASGI app rather than FastAPI or Starlette: benchmarks drive it at thousands of
requests per second, and owning the receive/send loop is what lets it notice a client that goes
away during a delay. State lives on the app instance, one process, one event loop: every counter
update happens without an ``await`` in between, so counts are exact under concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Message, Receive, Scope, Send

FAKE_VERSION = "0.0.0"
LOAD_DURATION_NS = 1_000_000
PROMPT_NS_PER_TOKEN = 1_000_000
EVAL_NS_PER_TOKEN = 10_000_000
MODIFIED_AT = "2025-01-01T00:00:00Z"

Kind = Literal["chat", "generate"]


class RequestError(Exception):
    """Answered as Ollama does: `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FakeConfig(BaseModel):
    """Runtime behaviour; `POST /_control/config` merges a partial object into it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt_tokens: int = Field(default=7, ge=0)
    completion_tokens: int = Field(default=5, ge=0)
    delay_s: float = Field(default=0.0, ge=0)
    chunk_delay_s: float = Field(default=0.0, ge=0)
    fail_status: int | None = Field(default=None, ge=400, le=599)
    fail_mid_stream: bool = False
    reply: str | None = None
    models: list[str] = Field(default_factory=lambda: ["llama3:latest"])
    omit_prompt_eval_count: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str = ""


class GenerationRequest(BaseModel):
    """The fields of `/api/chat` and `/api/generate` bodies this server looks at."""

    model_config = ConfigDict(extra="allow")

    model: str = ""
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    stream: bool | None = None
    options: dict[str, Any] | None = None

    @property
    def num_predict(self) -> int | None:
        value = (self.options or {}).get("num_predict")
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise RequestError(400, 'option "num_predict" must be of type integer')

    def input_text(self) -> str:
        """The prompt, or the content of the last user message."""
        if self.messages is None:
            return self.prompt or ""
        for message in reversed(self.messages):
            if message.role.lower() == "user":
                return message.content
        return ""


class Stats:
    """Call counters, read through `GET /_control/stats`."""

    def __init__(self) -> None:
        self.chat_calls = 0
        self.generate_calls = 0
        self.disconnects = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.inputs_in_flight: list[str] = []  # the input text of each call being answered
        self.last_request: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def canonical_model(name: str) -> str:
    """`llama3` and `llama3:latest` name the same model, as in Ollama."""
    last_segment = name.rsplit("/", 1)[-1]
    return name if ":" in last_segment else f"{name}:latest"


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def split_text(text: str, parts: int) -> list[str]:
    """`text` in `parts` non-empty pieces (fewer if the text is shorter)."""
    count = min(parts, len(text))
    if count <= 0:
        return []
    size = len(text)
    return [text[i * size // count : (i + 1) * size // count] for i in range(count)]


class Generation:
    """What one chat or generate call answers: text, token counts and final metrics."""

    def __init__(self, *, kind: Kind, request: GenerationRequest, config: FakeConfig) -> None:
        self.kind = kind
        self.model = request.model
        self.created_at = rfc3339_now()
        self.started_ns = time.monotonic_ns()
        self.config = config
        self.eval_count = config.completion_tokens
        self.done_reason = "stop"
        self.text = (
            config.reply if config.reply is not None else "echo: " + request.input_text()[:20]
        )
        limit = request.num_predict
        if limit is not None and 0 <= limit < config.completion_tokens:
            # Ollama stops at num_predict tokens and says why: the reply is cut to match.
            self.eval_count = limit
            self.done_reason = "length"
            self.text = self.text[: len(self.text) * limit // config.completion_tokens]
        if self.eval_count == 0:
            self.text = ""  # no tokens generated, nothing to say: streamed and whole agree

    def chunk(self, content: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "created_at": self.created_at}
        if self.kind == "chat":
            body["message"] = {"role": "assistant", "content": content}
        else:
            body["response"] = content
        body["done"] = False
        return body

    def final(self, content: str) -> dict[str, Any]:
        body = self.chunk(content)
        body["done"] = True
        body["done_reason"] = self.done_reason
        prompt_ns = self.config.prompt_tokens * PROMPT_NS_PER_TOKEN
        eval_ns = self.eval_count * EVAL_NS_PER_TOKEN
        elapsed_ns = time.monotonic_ns() - self.started_ns
        metrics = {
            "total_duration": LOAD_DURATION_NS + prompt_ns + eval_ns + elapsed_ns,
            "load_duration": LOAD_DURATION_NS,
            "prompt_eval_count": 0
            if self.config.omit_prompt_eval_count
            else self.config.prompt_tokens,
            "prompt_eval_duration": prompt_ns,
            "eval_count": self.eval_count,
            "eval_duration": eval_ns,
        }
        # Ollama's metric fields are `omitempty`: a zero value is absent, and clients must cope.
        body.update((key, value) for key, value in metrics.items() if value)
        return body


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


async def send_bytes(send: Send, *, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, body: Any, status: int = 200) -> None:
    await send_bytes(
        send, status=status, body=dumps(body), content_type=b"application/json; charset=utf-8"
    )


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise RequestError(400, "missing request body")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise RequestError(400, f"invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    return body


def validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    return f"{location}: {first['msg']}" if location else str(first["msg"])


class DisconnectWatch:
    """Notices the client going away while the server waits (delays), without polling."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Future[Message] | None = None

    async def sleep(self, seconds: float) -> bool:
        """Wait `seconds`; False if the client disconnected meanwhile."""
        if seconds <= 0:
            return True
        if self._task is None:
            self._task = asyncio.ensure_future(self._receive())
        done, _ = await asyncio.wait({self._task}, timeout=seconds)
        return not done

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


def ndjson_line(body: dict[str, Any]) -> bytes:
    return dumps(body) + b"\n"


async def send_paced(
    lines: list[dict[str, Any]], *, send: Send, watch: DisconnectWatch, delay_s: float
) -> None:
    """One write per line with `delay_s` before every line but the first (and before the end)."""
    for index, line in enumerate(lines):
        if index and not await watch.sleep(delay_s):
            raise ConnectionResetError
        await send({"type": "http.response.body", "body": ndjson_line(line), "more_body": True})
    if lines and not await watch.sleep(delay_s):
        raise ConnectionResetError


Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
NDJSON_HEADERS = [(b"content-type", b"application/x-ndjson")]


class FakeOllama:
    """The ASGI app. Routes are a dict lookup on (method, path): the hot path stays short."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.initial_config = config or FakeConfig()
        self.config = self.initial_config
        self.stats = Stats()
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self.root,
            ("HEAD", "/"): self.root,
            ("GET", "/api/version"): self.version,
            ("HEAD", "/api/version"): self.version,
            ("GET", "/api/tags"): self.tags,
            ("HEAD", "/api/tags"): self.tags,
            ("POST", "/api/show"): self.show,
            ("POST", "/api/chat"): self.chat,
            ("POST", "/api/generate"): self.generate,
            ("POST", "/_control/config"): self.control_config,
            ("POST", "/_control/reset"): self.control_reset,
            ("GET", "/_control/stats"): self.control_stats,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is None:
                await send_bytes(
                    send, status=404, body=b"404 page not found", content_type=b"text/plain"
                )
                return
            try:
                await handler(scope, receive, send)
            except RequestError as exc:
                await send_json(send, {"error": exc.message}, exc.status)
            except ConnectionResetError:
                self.stats.disconnects += 1
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)

    async def root(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_bytes(
            send, status=200, body=b"Ollama is running", content_type=b"text/plain; charset=utf-8"
        )

    async def version(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, {"version": FAKE_VERSION})

    async def tags(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, {"models": [model_entry(name) for name in self.config.models]})

    async def show(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = parse_json_object(await read_body(receive))
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise RequestError(400, "model is required")
        self.require_model(name)
        await send_json(send, show_body(canonical_model(name)))

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats.chat_calls += 1
        await self.generation(kind="chat", receive=receive, send=send)

    async def generate(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats.generate_calls += 1
        await self.generation(kind="generate", receive=receive, send=send)

    async def generation(self, *, kind: Kind, receive: Receive, send: Send) -> None:
        stats = self.stats
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        watch = DisconnectWatch(receive)
        try:
            await self.answer(kind=kind, receive=receive, send=send, watch=watch)
        finally:
            watch.close()
            stats.in_flight -= 1

    async def answer(
        self, *, kind: Kind, receive: Receive, send: Send, watch: DisconnectWatch
    ) -> None:
        body = parse_json_object(await read_body(receive))
        self.stats.last_request = body
        request = parse_generation(body, kind)
        text = request.input_text()
        self.stats.inputs_in_flight.append(text)
        try:
            await self.answer_request(request, kind=kind, send=send, watch=watch)
        finally:
            self.stats.inputs_in_flight.remove(text)

    async def answer_request(
        self, request: GenerationRequest, *, kind: Kind, send: Send, watch: DisconnectWatch
    ) -> None:
        config = self.config
        if not await watch.sleep(config.delay_s):
            raise ConnectionResetError
        if config.fail_status is not None:
            raise RequestError(config.fail_status, f"fake failure (status {config.fail_status})")
        self.require_model(request.model)
        generation = Generation(kind=kind, request=request, config=config)
        if request.messages == [] or request.prompt == "":
            # Ollama's "load the model" answer: one JSON object, even when streaming was asked for.
            await send_json(send, {**generation.chunk(""), "done": True, "done_reason": "load"})
        elif request.stream is False:
            await self.answer_whole(generation, send)
        else:
            await self.answer_stream(generation, send, watch)

    async def answer_whole(self, generation: Generation, send: Send) -> None:
        if generation.config.fail_mid_stream:
            # A non-streaming Ollama call that fails mid-generation answers 500 before any byte.
            raise RequestError(500, "fake failure mid-generation")
        await send_json(send, generation.final(generation.text))

    async def answer_stream(
        self, generation: Generation, send: Send, watch: DisconnectWatch
    ) -> None:
        config = generation.config
        pieces = split_text(generation.text, generation.eval_count)
        lines = [generation.chunk(piece) for piece in pieces]
        if config.fail_mid_stream:
            lines = [*lines[:1], {"error": "fake failure mid-stream"}]
        await send({"type": "http.response.start", "status": 200, "headers": NDJSON_HEADERS})
        if config.chunk_delay_s > 0:
            await send_paced(lines, send=send, watch=watch, delay_s=config.chunk_delay_s)
            lines = []
        if not config.fail_mid_stream:
            lines.append(generation.final(""))
        # Without pacing, one write carries every line: NDJSON readers split on newlines anyway.
        await send({"type": "http.response.body", "body": b"".join(map(ndjson_line, lines))})

    def require_model(self, name: str) -> None:
        wanted = canonical_model(name)
        if not any(canonical_model(known) == wanted for known in self.config.models):
            raise RequestError(404, f"model '{name}' not found")

    async def control_config(self, scope: Scope, receive: Receive, send: Send) -> None:
        patch = parse_json_object(await read_body(receive))
        try:
            self.config = FakeConfig.model_validate({**self.config.model_dump(), **patch})
        except ValidationError as exc:
            raise RequestError(400, validation_message(exc)) from exc
        await send_json(send, self.config.model_dump())

    async def control_reset(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.config = self.initial_config
        self.stats = Stats()
        await send_json(send, self.config.model_dump())

    async def control_stats(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, self.stats.as_dict())


def parse_generation(body: dict[str, Any], kind: Kind) -> GenerationRequest:
    try:
        request = GenerationRequest.model_validate(body)
    except ValidationError as exc:
        raise RequestError(400, validation_message(exc)) from exc
    if not request.model:
        raise RequestError(400, "model is required")
    _ = request.num_predict  # a wrong type is a 400 before anything else happens
    if kind == "chat":
        request.messages = request.messages or []
        request.prompt = None
    else:
        request.messages = None
        request.prompt = request.prompt or ""
    return request


def model_entry(name: str) -> dict[str, Any]:
    canonical = canonical_model(name)
    return {
        "name": canonical,
        "model": canonical,
        "modified_at": MODIFIED_AT,
        "size": 1_000_000,
        "digest": hashlib.sha256(canonical.encode()).hexdigest(),
        "details": model_details(),
    }


def model_details() -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "1M",
        "quantization_level": "Q4_0",
    }


def show_body(name: str) -> dict[str, Any]:
    return {
        "modelfile": f"# fake modelfile\nFROM {name}\n",
        "parameters": 'stop "<|eot_id|>"',
        "template": "{{ .Prompt }}",
        "details": model_details(),
        "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
        "capabilities": ["completion"],
        "modified_at": MODIFIED_AT,
    }


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(config: FakeConfig | None = None) -> FakeOllama:
    """A fresh server with its own configuration and counters."""
    return FakeOllama(config)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument(
        "--model", action="append", dest="models", help="repeatable; default llama3:latest"
    )
    parser.add_argument("--prompt-tokens", type=int, default=7)
    parser.add_argument("--completion-tokens", type=int, default=5)
    parser.add_argument("--reply", default=None, help="fixed reply text instead of the echo")
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import uvicorn  # Only the server process needs it; importing the app stays light.

    args = parse_args(argv)
    config = FakeConfig(
        prompt_tokens=args.prompt_tokens,
        completion_tokens=args.completion_tokens,
        reply=args.reply,
        models=args.models or ["llama3:latest"],
    )
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(
            create_app(config),
            host=args.host,
            port=args.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level=args.log_level,
            server_header=False,
            backlog=4096,
        )


if __name__ == "__main__":
    main()
