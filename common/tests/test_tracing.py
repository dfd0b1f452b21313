"""configure_tracing: off without an OTLP endpoint (nothing installed, nothing instrumented), on
with one (every app gets server spans, the client libraries are instrumented once, log lines get
the trace id, query strings and background calls stay out).

Tracing is process-wide (a tracer provider is set once), so what `create_service_app` installs is
observed in a fresh interpreter: this file run as a script builds two apps, calls one, and prints
what it found as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiohttp
import httpx
import pytest
import structlog
from aiohttp import web
from fastapi import FastAPI
from infergate_common.app import create_service_app
from infergate_common.settings import ServiceSettings
from infergate_common.tracing import (
    ENDPOINT_VARIABLES,
    RequestScopedSampler,
    SampledCallSessions,
    caller_not_sampled,
    configure_tracing,
    propagate_unsampled,
    service_resource,
    tracing_enabled,
    tracing_requested,
    untraced_request,
)
from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from pydantic import SecretStr

SERVICE = "probe-service"
EMAIL = "someone@example.com"


def run_probe(**env: str) -> dict[str, Any]:
    """This file as a script, with the OTEL_* variables of this process replaced by `env`."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, __file__],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    report["log_lines"] = [
        json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")
    ]
    return report


def test_without_an_endpoint_nothing_is_installed_or_instrumented() -> None:
    report = run_probe()

    assert report["configured"] is False
    assert report["enabled"] is False
    assert not any(report["instrumented"].values())
    assert report["spans"] == []
    work = [line for line in report["log_lines"] if line["event"] == "working"]
    assert len(work) == 2
    assert not any("trace_id" in line for line in work)


def test_with_an_endpoint_every_app_is_traced_and_its_log_lines_carry_the_trace_id() -> None:
    report = run_probe(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",  # nothing listens: spans are dropped
        OTEL_EXPORTER_OTLP_TIMEOUT="1",  # so the exit flush gives up fast
    )

    assert report["configured"] is True
    assert report["enabled"] is True
    assert all(report["instrumented"].values()), report["instrumented"]
    assert report["service_name"] == SERVICE
    assert report["sampler"].startswith("RequestScoped{ParentBased{root:AlwaysOnSampler")
    names = [span["name"] for span in report["spans"]]
    # Both apps of the process make server spans; /healthz is not traced.
    assert sorted(names) == ["GET /work", "GET /work", "downstream call", "downstream call"]
    servers = [span for span in report["spans"] if span["name"] == "GET /work"]
    for server in servers:
        assert EMAIL not in json.dumps(server["attributes"])  # the query string is redacted
        assert server["attributes"]["url.path"] == "/work"
        assert server["attributes"]["http.route"] == "/work"
        assert server["attributes"]["url.query"] == "REDACTED"
    clients = [span for span in report["spans"] if span["name"] == "downstream call"]
    assert {client["parent"] for client in clients} == {server["span_id"] for server in servers}
    assert report["background_call_recorded"] is False
    work = [line for line in report["log_lines"] if line["event"] == "working"]
    assert len(work) == 2
    assert {line["trace_id"] for line in work} == {server["trace_id"] for server in servers}
    assert all(line["request_id"] for line in work)  # next to the request id


def test_only_a_sampled_requests_calls_go_through_the_client_instrumentations_hooks() -> None:
    """SampledCallSessions: the call of a sampled request is made on the session with the aiohttp
    instrumentation's hooks (a client span, its context sent on); the call of an unsampled
    request on the one without (no span, no hook run), its unsampled context still sent on."""
    report = run_probe(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_EXPORTER_OTLP_TIMEOUT="1"
    )

    sampled, unsampled = report["relayed"][:2]
    assert sampled["hooks"] == 1
    assert unsampled["hooks"] == 0
    clients = [span for span in report["relay_spans"] if span["kind"] == "CLIENT"]
    callers = [span for span in clients if span["trace_id"] in {SAMPLED_TRACE, UNSAMPLED_TRACE}]
    assert [(span["name"], span["trace_id"]) for span in callers] == [("POST", SAMPLED_TRACE)]
    # The default sampler samples every new trace: each call made with the hooks, one span each.
    assert [call["hooks"] for call in report["relayed"][2:]] == [1] * NEW_TRACES
    assert len(clients) == 1 + NEW_TRACES
    assert sampled["traceparent"].startswith(f"00-{SAMPLED_TRACE}-")
    assert sampled["traceparent"].endswith("-01")
    # The same trace, still not sampled (the parent is this app's non-recording server span).
    assert unsampled["traceparent"].startswith(f"00-{UNSAMPLED_TRACE}-")
    assert unsampled["traceparent"].endswith("-00")
    assert all(span["trace_id"] != UNSAMPLED_TRACE for span in report["relay_spans"])


def test_a_new_trace_is_sampled_once_on_the_trace_id_it_gets() -> None:
    """A request without `traceparent` is sampled or not before its server span would be made
    (an unsampled one gets none); the ratio sampler decides by the trace id, so every sampled
    request's trace id is under the ratio's bound and every unsampled one's above it: the
    decision and the trace that follows it share one id, and the ratio is the configured one."""
    report = run_probe(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.5",
    )

    new = report["relayed"][2:]
    assert len(new) == NEW_TRACES
    servers = {span["trace_id"] for span in report["relay_spans"] if span["kind"] == "SERVER"}
    bound = round(0.5 * 2**64)  # TraceIdRatioBased: sampled when the low 64 bits are under it
    sampled = 0
    for call in new:
        _, trace_id, _, flags = call["traceparent"].split("-")
        low_bits = int(trace_id, 16) & (2**64 - 1)
        if int(flags, 16) & 1:  # W3C: bit 0 sampled (bit 1 says the id is random)
            sampled += 1
            assert low_bits < bound
            assert trace_id in servers  # FastAPI's server span, on the decided trace id
            assert call["hooks"] == 1
        else:
            assert low_bits >= bound
            assert trace_id not in servers  # no server span made for it
            assert call["hooks"] == 0
    assert 30 <= sampled <= 90  # about half of 120 (a quarter if decided twice on two ids)
    assert len(servers) == sampled + 1  # and the caller-sampled request's


def test_without_tracing_every_call_goes_through_one_session_with_no_hooks() -> None:
    report = run_probe()

    assert [call["hooks"] for call in report["relayed"]] == [0] * (2 + NEW_TRACES)
    assert [call["traceparent"] for call in report["relayed"]] == [None] * (2 + NEW_TRACES)
    assert report["relay_spans"] == []


def test_tracing_is_requested_only_by_an_otlp_endpoint() -> None:
    assert not tracing_requested({})
    assert not tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": " "})
    assert not tracing_requested({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"})
    for name in ENDPOINT_VARIABLES:
        assert tracing_requested({name: "http://collector:4318"})
    disabled = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}
    assert not tracing_requested(disabled)


def test_otel_service_name_names_the_service_over_its_own_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert service_resource(SERVICE).attributes["service.name"] == SERVICE
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-gateway")
    assert service_resource(SERVICE).attributes["service.name"] == "edge-gateway"


def test_a_client_span_without_a_parent_is_not_recorded_and_the_rest_is_the_samplers() -> None:
    sampler = RequestScopedSampler(ALWAYS_ON)
    parent = SpanContext(
        trace_id=1, span_id=2, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    in_request = trace.set_span_in_context(NonRecordingSpan(parent))

    def decision(kind: SpanKind, context: Any = None) -> Decision:
        return sampler.should_sample(context, 3, "call", kind).decision

    assert decision(SpanKind.CLIENT) is Decision.DROP
    assert decision(SpanKind.CLIENT, in_request) is Decision.RECORD_AND_SAMPLE
    assert decision(SpanKind.SERVER) is Decision.RECORD_AND_SAMPLE
    assert decision(SpanKind.INTERNAL) is Decision.RECORD_AND_SAMPLE


TRACE = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-"


@pytest.mark.parametrize(
    ("traceparent", "not_sampled"),
    [
        (TRACE + b"00", True),
        (TRACE + b"02", True),  # another flag set, not the sampled one
        (TRACE + b"01", False),
        (TRACE + b"03", False),
        (None, False),  # no caller context: the sampler decides
        (b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", False),
        (TRACE + b"zz", False),
        (TRACE.replace(b"00-", b"ff-", 1) + b"00", False),
    ],
)
def test_only_a_well_formed_unsampled_traceparent_counts_as_not_sampled(
    traceparent: bytes | None, not_sampled: bool
) -> None:
    headers = [(b"accept", b"*/*")]
    if traceparent is not None:
        headers.append((b"traceparent", traceparent))
    assert caller_not_sampled(headers) is not_sampled


def test_internal_services_make_no_server_span_for_an_unsampled_caller() -> None:
    unsampled = {"path": "/usage/reserve", "headers": [(b"traceparent", TRACE + b"00")]}
    sampled = {"path": "/usage/reserve", "headers": [(b"traceparent", TRACE + b"01")]}
    probe = {"path": "/healthz", "headers": [(b"traceparent", TRACE + b"01")]}
    internal = untraced_request(sampled_by_caller=True)
    edge = untraced_request(sampled_by_caller=False)
    assert (internal(unsampled), internal(sampled), internal(probe)) == (True, False, True)
    # The gateway decides for everyone: a client's unsampled traceparent still gets its
    # (non-recording) server span, whose context the gateway passes on.
    assert (edge(unsampled), edge(sampled), edge(probe)) == (False, False, True)


# The probe: run in a fresh interpreter by the tests above.


class Instrumentor(Protocol):
    @property
    def is_instrumented_by_opentelemetry(self) -> bool: ...


@asynccontextmanager
async def _no_resources(app: FastAPI) -> AsyncIterator[None]:
    yield


def _probe_app(settings: ServiceSettings) -> FastAPI:
    app = create_service_app(settings=settings, lifespan=_no_resources, title="probe")
    log = structlog.get_logger("probe")
    tracer = trace.get_tracer("probe")

    @app.get("/work")
    async def work() -> dict[str, str]:
        log.info("working")
        with tracer.start_as_current_span("downstream call", kind=SpanKind.CLIENT):
            return {}

    return app


async def _call(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        (await client.get("/work", params={"email": EMAIL})).raise_for_status()
        (await client.get("/healthz")).raise_for_status()


def probe() -> None:
    settings = ServiceSettings(
        service_name=SERVICE, port=1, internal_token=SecretStr("t" * 32), log_format="json"
    )
    configured = configure_tracing(SERVICE)
    apps = [_probe_app(settings), _probe_app(settings)]  # a second app in the same process
    provider = trace.get_tracer_provider()
    sdk = provider if isinstance(provider, TracerProvider) else None
    memory = InMemorySpanExporter()
    if sdk is not None:
        sdk.add_span_processor(SimpleSpanProcessor(memory))
    for app in apps:
        asyncio.run(_call(app))
    background = trace.get_tracer("probe").start_span("poll", kind=SpanKind.CLIENT)
    instrumentors: dict[str, Instrumentor] = {
        "aiohttp": AioHttpClientInstrumentor(),
        "httpx": HTTPXClientInstrumentor(),
        "redis": RedisInstrumentor(),
        "pymongo": PymongoInstrumentor(),
    }
    report = {
        "configured": configured,
        "enabled": tracing_enabled(),
        "instrumented": {
            name: instrumentor.is_instrumented_by_opentelemetry
            for name, instrumentor in instrumentors.items()
        },
        "service_name": sdk.resource.attributes.get("service.name") if sdk else None,
        "sampler": sdk.sampler.get_description() if sdk else None,
        "spans": [
            {
                "name": span.name,
                "trace_id": trace.format_trace_id(span.context.trace_id),
                "span_id": trace.format_span_id(span.context.span_id),
                "parent": span.parent and trace.format_span_id(span.parent.span_id),
                "attributes": dict(span.attributes or {}),
            }
            for span in memory.get_finished_spans()
            if span.context is not None
        ],
        "background_call_recorded": background.is_recording(),
    }
    memory.clear()
    report["relayed"] = asyncio.run(_relay_calls(settings))
    report["relay_spans"] = [
        {"name": span.name, "kind": span.kind.name, "trace_id": f"{span.context.trace_id:032x}"}
        for span in memory.get_finished_spans()
        if span.context is not None
    ]
    print(json.dumps(report))


NEW_TRACES = 120
SAMPLED_TRACE = "a" * 32
UNSAMPLED_TRACE = "b" * 32


async def _relay_calls(settings: ServiceSettings) -> list[dict[str, Any]]:
    """Two requests to an app whose route calls a downstream server through a
    SampledCallSessions, one from a sampled caller and one from an unsampled one: what the
    downstream server received, and how many trace hooks the session used had."""
    received: list[str | None] = []

    async def downstream(request: web.Request) -> web.Response:
        received.append(request.headers.get("traceparent"))
        return web.json_response({})

    server = web.Application()
    server.router.add_post("/down", downstream)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/down"
    connector = aiohttp.TCPConnector(limit=4)
    sessions = SampledCallSessions(
        lambda owner: aiohttp.ClientSession(connector=connector, connector_owner=owner)
    )
    app = create_service_app(settings=settings, lifespan=_no_resources, title="relay")
    hooks: list[int] = []

    @app.post("/relay")
    async def relay() -> dict[str, str]:
        session = sessions.current()
        hooks.append(len(session.trace_configs))
        headers: dict[str, str] = {}
        propagate_unsampled(headers)
        async with session.post(url, json={}, headers=headers) as answer:
            answer.raise_for_status()
        return {}

    transport = httpx.ASGITransport(app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            for trace_id, flags in ((SAMPLED_TRACE, "01"), (UNSAMPLED_TRACE, "00")):
                traceparent = f"00-{trace_id}-{'c' * 16}-{flags}"
                answer = await client.post("/relay", headers={"traceparent": traceparent})
                answer.raise_for_status()
            for _ in range(NEW_TRACES):  # no traceparent: each starts a trace
                (await client.post("/relay")).raise_for_status()
    finally:
        await sessions.close()
        await runner.cleanup()
    return [
        {"traceparent": traceparent, "hooks": count}
        for traceparent, count in zip(received, hooks, strict=True)
    ]


if __name__ == "__main__":
    probe()
