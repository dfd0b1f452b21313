"""Traces on the whole stack: a stack started with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a test
OTLP receiver, called through nginx the way a client calls it.

One chat is one trace from the caller's `traceparent` to the model: nginx passes it, the gateway
continues it, auth, usage and ai-service continue it, ai-service sends it on to Ollama, and Redis
and MongoDB calls are child spans. A malformed `traceparent` starts a fresh trace. Every log line
of the request carries the trace id. No span carries the prompt, the output or a key.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from infergate_devstack.nginx import UNLIMITED_EDGE
from infergate_devstack.stack import Stack
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.fake_ollama import create_app as create_fake_ollama
from tests.helpers import local_stack, register
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

MODEL = "llama3"
SERVICES = ("api-gateway", "auth-service", "usage-service", "ai-service")
LOGGED_COMPONENTS = ("gateway", "auth", "usage", "ai")
TRACE_ID = re.compile(r"[0-9a-f]{32}")
ZERO_TRACE_ID = "0" * 32
# A Redis command as recorded: its name, then a `?` for each argument (keys and values).
SANITIZED_REDIS = re.compile(r"[A-Z]+( [A-Z]+)?( \?)*")


class TraceparentRecorder:
    """The fake Ollama, noting the `traceparent` header each model call arrives with."""

    def __init__(self) -> None:
        self.ollama = create_fake_ollama()
        self.traceparents: list[str | None] = []
        self.url = ""  # where it is served (set by the fixture)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in ("/api/chat", "/api/generate"):
            headers = dict(scope["headers"])
            value = headers.get(b"traceparent")
            self.traceparents.append(value.decode() if value is not None else None)
        await self.ollama(scope, receive, send)


@contextmanager
def serve_in_thread(app: ASGIApp, *, timeout_s: float = 10.0) -> Iterator[str]:
    """`app` under uvicorn on a thread, on a free loopback port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the recording Ollama did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def ollama() -> Iterator[TraceparentRecorder]:
    recorder = TraceparentRecorder()
    with serve_in_thread(recorder) as url:
        recorder.url = url
        yield recorder


@pytest.fixture(scope="module")
def traced_stack(
    tmp_path_factory: pytest.TempPathFactory,
    receiver: OtlpReceiver,
    ollama: TraceparentRecorder,
) -> Iterator[Stack]:
    env = {
        **UNLIMITED_EDGE,
        "FREE_RATE_LIMIT": "10000",
        "REGISTRATION_RATE_LIMIT": "10000",
        "LOG_LEVEL": "info",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        # Spans reach the receiver within 50 ms of ending, not the default 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    with local_stack(tmp_path_factory.mktemp("traced"), ollama.url, env) as stack:
        yield stack


@pytest.fixture
async def api(traced_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=traced_stack.public_url, timeout=30.0) as client:
        yield client


def new_traceparent() -> tuple[str, str, str]:
    """A caller's sampled trace context: (header, trace id, parent span id)."""
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


async def wait_for_trace(
    receiver: OtlpReceiver,
    trace_id: str,
    ready: Callable[[list[ReceivedSpan]], bool],
) -> list[ReceivedSpan]:
    """The spans of `trace_id` once `ready` holds for them and every parent has arrived."""

    def complete(spans: list[ReceivedSpan]) -> bool:
        mine = [span for span in spans if span.trace_id == trace_id]
        ids = {span.span_id for span in mine}
        roots = [span for span in mine if span.parent_span_id not in ids]
        return len(roots) == 1 and ready(mine)

    spans = await asyncio.to_thread(receiver.wait_for, complete)
    return [span for span in spans if span.trace_id == trace_id]


LogLine = dict[str, Any]


async def wait_for_lines(
    stack: Stack,
    wanted: Callable[[LogLine], bool],
    *,
    until: Callable[[list[LogLine]], bool] = bool,
    timeout_s: float = 10.0,
) -> list[LogLine]:
    """The services' log lines that are `wanted`, once `until` holds for them (polling the log
    files, which the services write as they go, until a deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [
            line
            for component in LOGGED_COMPONENTS
            for line in json_lines(stack.log_path(component))
            if wanted(line)
        ]
        if until(lines):
            return lines
        if time.monotonic() > deadline:
            raise TimeoutError(f"the log lines expected were not written; found {lines}")
        await asyncio.sleep(0.05)


async def request_lines(stack: Stack, request_id: str) -> list[LogLine]:
    """Every service's log lines of one request, once the gateway's access line is written."""
    return await wait_for_lines(
        stack,
        lambda line: line.get("request_id") == request_id,
        until=lambda lines: any(
            line["service"] == "api-gateway" and line["event"] == "request" for line in lines
        ),
    )


def json_lines(path: Path) -> list[LogLine]:
    """The complete JSON lines of a log file (one being written is left for the next read)."""
    complete = path.read_text().split("\n")[:-1]
    return [json.loads(text) for text in complete if text.startswith("{")]


def only(spans: list[ReceivedSpan], check: Callable[[ReceivedSpan], bool]) -> ReceivedSpan:
    found = [span for span in spans if check(span)]
    assert len(found) == 1, [(span.service, span.name) for span in found]
    return found[0]


def is_db(system: str) -> Callable[[ReceivedSpan], bool]:
    return lambda span: span.attributes.get("db.system") == system


def everything_arrived(spans: list[ReceivedSpan]) -> bool:
    services = {span.service for span in spans if span.kind == "SERVER"}
    return (
        set(SERVICES) <= services
        and any(span.name == f"chat {MODEL}" for span in spans)
        and any(is_db("redis")(span) for span in spans)
        and any(is_db("mongodb")(span) for span in spans)
        and any(str(span.attributes.get("http.url", "")).endswith("/api/chat") for span in spans)
    )


async def test_a_chat_is_one_trace_from_the_callers_traceparent_to_the_model(
    api: httpx.AsyncClient,
    receiver: OtlpReceiver,
    ollama: TraceparentRecorder,
    traced_stack: Stack,
) -> None:
    key = await register(api)
    prompt = f"a prompt no span may hold {uuid.uuid4().hex}"
    traceparent, trace_id, parent_id = new_traceparent()

    response = await api.post(
        "/v1/chat",
        json={"prompt": prompt, "model": MODEL},
        headers={"x-api-key": key, "traceparent": traceparent, "tracestate": "vendor=kept"},
    )

    assert response.status_code == 200, response.text
    spans = await wait_for_trace(receiver, trace_id, everything_arrived)
    # nginx passed the caller's context on and the gateway continued it (with its tracestate).
    edge = only(spans, lambda span: span.service == "api-gateway" and span.kind == "SERVER")
    assert edge.name == "POST /v1/chat"
    assert edge.parent_span_id == parent_id
    assert edge.trace_state == "vendor=kept"
    # Each internal hop is the child of the gateway's call to it.
    by_id = {span.span_id: span for span in spans}
    for service in SERVICES[1:]:
        for server in [s for s in spans if s.service == service and s.kind == "SERVER"]:
            caller = by_id[server.parent_span_id]
            assert (caller.service, caller.kind) == ("api-gateway", "CLIENT"), server.name
    # The model call went out with the same trace, as the child of ai-service's client span.
    to_ollama = only(spans, lambda span: str(span.attributes.get("http.url")).endswith("/api/chat"))
    assert to_ollama.service == "ai-service"
    assert f"00-{trace_id}-{to_ollama.span_id}-01" in ollama.traceparents
    # Redis and MongoDB calls are child spans of the request, with no statement values.
    redis = [span for span in spans if is_db("redis")(span)]
    assert {span.service for span in redis} == {"api-gateway"}
    statements = [str(span.attributes["db.statement"]) for span in redis]
    assert all(SANITIZED_REDIS.fullmatch(line) for s in statements for line in s.split("\n"))
    mongo = [span for span in spans if is_db("mongodb")(span)]
    assert {span.service for span in mongo} <= {"auth-service", "usage-service"}
    assert all(str(span.attributes["db.statement"]).isalpha() for span in mongo)  # names only
    assert all(span.parent_span_id in by_id for span in redis + mongo)
    # The GenAI span: model, the model's token counts and finish reason.
    chat = only(spans, lambda span: span.name == f"chat {MODEL}")
    assert chat.kind == "CLIENT"
    assert chat.parent_span_id == edge.span_id
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == MODEL
    assert chat.attributes["gen_ai.usage.input_tokens"] == 7
    assert chat.attributes["gen_ai.usage.output_tokens"] == 5
    assert chat.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    # Nothing the caller sent or got back, nor a key, is in any span received.
    output = response.json()["output"]
    secrets_seen = (prompt, output, prompt[:20], key, traced_stack.internal_token)
    for span in receiver.spans():
        text = json.dumps([span.name, {k: repr(v) for k, v in span.attributes.items()}])
        assert not any(secret in text for secret in secrets_seen), (span.service, span.name)


async def test_a_streamed_chat_is_one_trace_to_the_model_too(
    api: httpx.AsyncClient, receiver: OtlpReceiver, ollama: TraceparentRecorder
) -> None:
    key = await register(api)
    traceparent, trace_id, parent_id = new_traceparent()
    headers = {"x-api-key": key, "traceparent": traceparent}

    async with api.stream(
        "POST", "/v1/chat", json={"prompt": "Hello", "stream": True}, headers=headers
    ) as response:
        body = await response.aread()

    assert response.status_code == 200, body
    spans = await wait_for_trace(receiver, trace_id, everything_arrived)
    edge = only(spans, lambda span: span.service == "api-gateway" and span.kind == "SERVER")
    assert edge.parent_span_id == parent_id
    chat = only(spans, lambda span: span.name == f"chat {MODEL}")
    assert chat.attributes["gen_ai.request.stream"] is True
    assert chat.attributes["gen_ai.usage.output_tokens"] == 5
    to_ollama = only(spans, lambda span: str(span.attributes.get("http.url")).endswith("/api/chat"))
    assert f"00-{trace_id}-{to_ollama.span_id}-01" in ollama.traceparents


@pytest.mark.parametrize(
    "traceparent",
    [
        "not-a-traceparent",
        f"00-{ZERO_TRACE_ID}-{'b' * 16}-01",  # all-zero trace id
        f"00-{'a' * 32}-{'0' * 16}-01",  # all-zero parent id
        f"00-{'A' * 32}-{'b' * 16}-01",  # upper case
        f"ff-{'a' * 32}-{'b' * 16}-01",  # the invalid version
        # Not the version-00 shape; the SDK would accept it, nginx drops it.
        f"01-{'a' * 32}-{'b' * 16}-01-more",
    ],
)
async def test_a_malformed_traceparent_starts_a_fresh_trace(
    api: httpx.AsyncClient, receiver: OtlpReceiver, traced_stack: Stack, traceparent: str
) -> None:
    key = await register(api)

    response = await api.post(
        "/v1/chat",
        json={"prompt": "Hello", "model": MODEL},
        headers={"x-api-key": key, "traceparent": traceparent, "tracestate": "vendor=dropped"},
    )

    assert response.status_code == 200, response.text
    lines = await request_lines(traced_stack, response.headers["x-request-id"])
    access = only_line(lines, service="api-gateway", event="request")
    trace_id = access["trace_id"]
    assert TRACE_ID.fullmatch(trace_id)
    assert trace_id != ZERO_TRACE_ID
    assert trace_id not in traceparent.lower()
    spans = await wait_for_trace(receiver, trace_id, everything_arrived)
    edge = only(spans, lambda span: span.service == "api-gateway" and span.kind == "SERVER")
    assert edge.parent_span_id == ""  # a root: nothing of the caller's context was continued
    assert edge.trace_state == ""


def only_line(lines: list[dict[str, Any]], *, service: str, event: str) -> dict[str, Any]:
    found = [line for line in lines if line["service"] == service and line["event"] == event]
    assert len(found) == 1, found
    return found[0]


async def test_every_log_line_of_a_traced_request_carries_its_trace_id(
    api: httpx.AsyncClient, receiver: OtlpReceiver, traced_stack: Stack
) -> None:
    key = await register(api)
    traceparent, trace_id, _ = new_traceparent()
    request_id = f"tracing-{uuid.uuid4().hex}"

    response = await api.post(
        "/v1/chat",
        json={"prompt": "Hello", "model": MODEL},
        headers={"x-api-key": key, "traceparent": traceparent, "x-request-id": request_id},
    )

    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id  # unchanged by tracing
    lines = await request_lines(traced_stack, request_id)
    assert {line["service"] for line in lines} >= {"api-gateway", "usage-service", "ai-service"}
    assert all(line.get("trace_id") == trace_id for line in lines), lines
    # Each line names the span it was written in, one of the trace's (a span ends, and is
    # exported, after the lines written in it: wait for every one of them).
    written_in = {line["span_id"] for line in lines}
    spans = await wait_for_trace(
        receiver,
        trace_id,
        lambda mine: everything_arrived(mine) and written_in <= {span.span_id for span in mine},
    )
    assert written_in <= {span.span_id for span in spans}


async def test_background_work_makes_no_traces_of_its_own(
    api: httpx.AsyncClient, receiver: OtlpReceiver, traced_stack: Stack
) -> None:
    """The gateway polls auth-service for key changes every second (and claims settlements from
    Redis): those calls belong to no request, and are not recorded."""
    polls = await wait_for_lines(traced_stack, lambda line: line.get("path") == "/auth/changes")
    key = await register(api)
    traceparent, trace_id, _ = new_traceparent()
    response = await api.post(
        "/v1/chat", json={"prompt": "Hello"}, headers={"x-api-key": key, "traceparent": traceparent}
    )
    assert response.status_code == 200, response.text
    # Exported after the polls above: anything recorded for them would have arrived by now.
    await wait_for_trace(receiver, trace_id, everything_arrived)

    received = receiver.spans()

    assert all("trace_id" not in line for line in polls)
    assert not [span for span in received if "/auth/changes" in span.name]
    assert [span for span in received if span.parent_span_id == "" and span.kind != "SERVER"] == []
    # Probes and scrapes are not traced either.
    assert not [span for span in received if span.name.endswith(("/healthz", "/metrics"))]


async def test_an_unsampled_request_stays_unsampled_at_every_hop(
    api: httpx.AsyncClient, receiver: OtlpReceiver
) -> None:
    """A caller's trace that is not sampled (flags 00) records nothing anywhere: each service
    passes the decision on (its client calls go uninstrumented, the context still goes with
    them), so no later service starts a trace of its own for the request."""
    key, other_key = await register(api), await register(api)
    unsampled_id = secrets.token_hex(16)
    unsampled = f"00-{unsampled_id}-{secrets.token_hex(8)}-00"
    before = {span.span_id for span in receiver.spans()}
    response = await api.post(
        "/v1/chat", json={"prompt": "Hello"}, headers={"x-api-key": key, "traceparent": unsampled}
    )
    assert response.status_code == 200, response.text
    # A sampled chat after it (another user, so auth-service is asked again): once its spans
    # are in, the unsampled one's would be too.
    traceparent, trace_id, _ = new_traceparent()
    sampled = await api.post(
        "/v1/chat",
        json={"prompt": "Hello"},
        headers={"x-api-key": other_key, "traceparent": traceparent},
    )
    assert sampled.status_code == 200, sampled.text
    await wait_for_trace(receiver, trace_id, everything_arrived)

    new = [span for span in receiver.spans() if span.span_id not in before]
    assert [span for span in new if span.trace_id == unsampled_id] == []
    # Every span that arrived since belongs to the sampled chat (registrations' traces may still
    # be arriving: they have no traceparent of their own): none of the unsampled chat's hops
    # (auth, usage, ai, or their databases) started a trace of its own.
    registrations = {span.trace_id for span in new if "register" in span.name}
    strays = [
        (span.service, span.name) for span in new if span.trace_id not in {trace_id, *registrations}
    ]
    assert strays == []
