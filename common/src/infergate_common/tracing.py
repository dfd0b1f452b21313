"""Tracing with OpenTelemetry: on when OTEL_EXPORTER_OTLP_ENDPOINT is set, otherwise off.

`configure_tracing` runs once per process (from `create_service_app`). With an OTLP endpoint in
the standard variables it installs the SDK's tracer provider (service.name from OTEL_SERVICE_NAME,
else the service's own name; every other OTEL_* variable is read by the SDK itself: sampler,
batch sizes, headers, timeouts) with a batch processor and the OTLP/HTTP exporter, and instruments
the client libraries once: aiohttp (the internal calls, and Ollama's through `AiohttpTransport`),
httpx, redis and pymongo (our aiohttp sessions come in pairs, `SampledCallSessions`, so that only a
sampled request's calls go through the instrumentation's hooks). Each app makes its server spans
with FastAPI's own telemetry (`server_telemetry`), for the requests it traces
(`untraced_request`). W3C trace context is the propagation (the SDK's default), so a caller's
`traceparent` is continued.

Without the variable nothing is installed or instrumented, and no middleware is added: tracing
off costs nothing. The OTEL_* variables are read here, not through the services' settings: they
are the SDK's contract, which reads them itself.

What spans never carry: request or response bodies (no instrumentation records them), prompts and
outputs (the gateway's GenAI span has counts only), keys (redis statements are recorded with every
argument replaced by `?`, MongoDB commands by name only), and query strings (the admin lookup by
email), which are cut from recorded URLs and redacted from the server spans.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from contextvars import Context as Variables
from contextvars import ContextVar, copy_context
from typing import Any

import aiohttp
import yarl
from fastapi.telemetry import TelemetryConfig
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from starlette.types import ASGIApp, Receive, Scope, Send

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# Probes and scrapes: frequent, and nothing to see. Regexes searched in the URL (path, no query).
UNTRACED_PATHS = frozenset({"/health", "/healthz", "/metrics", "/readyz", "/readyz/public"})


def tracing_enabled() -> bool:
    """Whether this process exports spans (an SDK tracer provider was installed)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment names an OTLP endpoint for traces (and does not disable the SDK)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def configure_tracing(service_name: str) -> bool:
    """Install the exporting tracer provider and instrument the client libraries, once per
    process, when the environment asks for traces; True when this process traces."""
    if tracing_enabled():
        return True  # another app of this process installed it
    if not tracing_requested():
        return False
    provider = TracerProvider(
        resource=service_resource(service_name),
        id_generator=DecidedIdGenerator(),
        # What TracerProvider would use: OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG.
        sampler=RequestScopedSampler(sampling._get_from_env_or_default()),
    )
    # Imported here: the exporter and the instrumentations (with pymongo and redis, which not
    # every service uses) cost a service's start-up half a second when tracing is off.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider.add_span_processor(RedactQuery())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _instrument_clients()
    return True


def server_telemetry(tracing: bool) -> TelemetryConfig:
    """FastAPI's own OpenTelemetry support, for the server span of each request it sees (it
    continues the caller's trace; about a third of the instrumentation middleware's cost per
    request, see bench/otel_server_cost.py): tracing only (metrics are Prometheus's, logs
    structlog's), no spans per dependency or serialization. Off entirely when this process does
    not trace. Which requests it sees is decided before it, by `untraced_request`'s hook (in
    `ServiceApp`): the others skip FastAPI's telemetry altogether (`skip_server_span`)."""
    return {"tracing": tracing, "metrics": False, "logs": False, "operation_spans": False}


def untraced_request(*, sampled_by_caller: bool) -> Callable[[MutableMapping[str, Any]], bool]:
    """Whether a request goes without a server span: probes and scrapes never get one.

    `sampled_by_caller` (the internal services: the gateway decides): a request whose
    `traceparent` says its trace is not sampled gets no server span at all, rather than one that
    records nothing (its client calls go uninstrumented all the same, and it calls no further
    service that could start a trace of its own). Otherwise (the gateway) a request that starts
    a trace is sampled before its server span would be made (`_untraced_or_unsampled_root`)."""
    return _untraced_or_unsampled if sampled_by_caller else _untraced_or_unsampled_root


# FastAPI's telemetry leaves alone a request whose ASGI scope holds this key (it is how FastAPI
# keeps a mounted app from observing a request twice). Set before FastAPI sees the request, it
# skips all of its per-request work (its checks, context attach and detach): about 8 us a
# request against its own `exclude` hook, in every service.
_FASTAPI_TELEMETRY = "fastapi.telemetry"


def skip_server_span(scope: MutableMapping[str, Any]) -> None:
    """Make FastAPI's telemetry leave this request alone (no server span, no per-request work)."""
    scope[_FASTAPI_TELEMETRY] = None


# Where the gateway's hook leaves the non-recording span of a request it did not sample.
UNSAMPLED_ROOT = "infergate.unsampled_root"
# The trace id the gateway decided on for the request about to get its server span.
_decided_trace_id: ContextVar[int] = ContextVar("infergate_decided_trace_id", default=0)
# An unsampled request's trace context as headers, rendered once for its internal calls.
_unsampled_headers: ContextVar[dict[str, str] | None] = ContextVar(
    "infergate_unsampled_headers", default=None
)
_ids = RandomIdGenerator()


class DecidedIdGenerator(RandomIdGenerator):
    """Random ids, but a root server span gets the trace id the gateway's sampling decision was
    made on (`_untraced_or_unsampled_root`), so the sampler, asked again with it, agrees."""

    def generate_trace_id(self) -> int:
        decided = _decided_trace_id.get()
        if decided:
            _decided_trace_id.set(0)
            return decided
        return super().generate_trace_id()


def _untraced_or_unsampled_root(scope: MutableMapping[str, Any]) -> bool:
    """The gateway's `untraced_request` hook. A request with no `traceparent` starts a trace: the
    configured sampler decides here, on a fresh trace id, before FastAPI's telemetry would build
    a server span for it. Not sampled (most requests, with a ratio sampler): no server span at
    all (its attributes, context and a span that records nothing cost about 40 us a request);
    `UnsampledRequestsUninstrumented` makes a non-recording span of that trace id current
    instead. Sampled: FastAPI's server span, with that trace id (`DecidedIdGenerator`), which the
    sampler decides on again the same way (every built-in sampler decides by the trace id and
    the parent). A request with a `traceparent` is left to FastAPI and the sampler."""
    if _untraced(scope):
        return True
    for name, _ in scope.get("headers", ()):
        if name == b"traceparent":
            return False
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return False
    trace_id = _ids.generate_trace_id()
    method = str(scope.get("method", "HTTP"))
    result = provider.sampler.should_sample(Context(), trace_id, method, SpanKind.SERVER)
    if result.decision is not sampling.Decision.DROP:
        _decided_trace_id.set(trace_id)
        return False
    scope[UNSAMPLED_ROOT] = _unsampled_span(trace_id, result.trace_state)
    return True


def _unsampled_span(trace_id: int, trace_state: TraceState | None = None) -> NonRecordingSpan:
    """A span of a trace that is not sampled, with a fresh span id: it records nothing, and
    its context, passed on, tells the next service not to record either."""
    return NonRecordingSpan(
        SpanContext(
            trace_id=trace_id,
            span_id=_ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.DEFAULT),
            trace_state=trace_state,
        )
    )


class UnsampledRequestsUninstrumented:
    """A request whose trace is not sampled makes its client calls (Redis, MongoDB, HTTP)
    without the instrumentations: their hooks would only build spans that are dropped, and at one
    request in ten sampled they were most of tracing's cost. Its trace context (sampled flag off)
    is rendered once and passed on by `propagate_unsampled`, so the next service follows the same
    decision. Added only when this process traces; inside the server span (FastAPI's, around the
    app), or in place of it for a request the gateway did not sample (`UNSAMPLED_ROOT`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root = scope.get(UNSAMPLED_ROOT)
        current = trace.get_current_span()
        if root is None and current.is_recording():
            await self.app(scope, receive, send)
            return
        context = otel_context.get_current() if root is None else trace.set_span_in_context(root)
        rendered: dict[str, str] = {}
        if root is not None or current.get_span_context().is_valid:
            # an internal service's request without a server span has no context to pass on
            propagate.inject(rendered, context=context)
        token = otel_context.attach(_suppressed(context))  # the span and the suppression at once
        marked = _unsampled_headers.set(rendered)
        try:
            await self.app(scope, receive, send)
        finally:
            _unsampled_headers.reset(marked)
            otel_context.detach(token)


def _suppressed(context: Context) -> Context:
    """`context` with the instrumentations suppressed: what the SDK's `suppress_instrumentation`
    sets (its key, and the plain one older instrumentations read), in one context."""
    suppressed = otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, context)
    return otel_context.set_value("suppress_instrumentation", True, suppressed)


def propagate_unsampled(headers: dict[str, str]) -> None:
    """When this process traces, add to an internal call's headers the trace context that the
    aiohttp instrumentation would have, for a call it does not see (one not made for a sampled
    request: `SampledCallSessions`): the unsampled request's own, or for background work a fresh
    one, not sampled either, so that the next service records nothing for the call."""
    rendered = _unsampled_headers.get()
    if rendered is not None:
        headers.update(rendered)
        return
    if not tracing_enabled():
        return
    span = trace.get_current_span()
    if span.is_recording():
        return  # the call goes through the instrumentation, which sends it
    if not span.get_span_context().is_valid:
        span = _unsampled_span(_ids.generate_trace_id())
    propagate.inject(headers, context=trace.set_span_in_context(span))


class SampledCallSessions:
    """Two aiohttp sessions over one connector (one pool, one connection limit): one with the
    OpenTelemetry aiohttp instrumentation's hooks, for the calls of a sampled request, and one
    without them, for every other call. The hooks cost about 40 us of CPU per call even with the
    instrumentation suppressed (aiohttp builds and awaits its trace signals whatever they do),
    and a chat makes four such calls: an unsampled request's calls skip them entirely. Its trace
    context still goes along (`propagate_unsampled`). Without tracing in this process there is
    one session, with no hooks.

    `make(owner)` builds a session over the shared connector; the first one made owns it."""

    def __init__(self, make: Callable[[bool], aiohttp.ClientSession]) -> None:
        self._plain = make(True)
        self._traced: aiohttp.ClientSession | None = None
        if tracing_enabled():
            from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

            self._traced = make(False)  # the instrumentation adds its hooks to every session
            AioHttpClientInstrumentor.uninstrument_session(self._plain)

    def current(self) -> aiohttp.ClientSession:
        """The session for a call made now: the traced one inside a recording span."""
        traced = self._traced
        if traced is not None and trace.get_current_span().is_recording():
            return traced
        return self._plain

    async def close(self) -> None:
        if self._traced is not None:
            await self._traced.close()
        await self._plain.close()  # and the connector


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return str(scope.get("path", "")) in UNTRACED_PATHS


def _untraced_or_unsampled(scope: MutableMapping[str, Any]) -> bool:
    return _untraced(scope) or caller_not_sampled(scope.get("headers", ()))


def caller_not_sampled(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the request carries a well-formed W3C `traceparent` whose sampled flag is off
    (version 00: `00-<32 hex>-<16 hex>-<2 hex flags>`); anything else is left to the sampler."""
    for name, value in headers:
        if name == b"traceparent":
            parts = value.split(b"-")
            if len(parts) != 4 or parts[0] != b"00" or len(parts[3]) != 2:
                return False
            try:
                return not int(parts[3], 16) & 1
            except ValueError:
                return False
    return False


def service_resource(service_name: str) -> Resource:
    """The SDK's resource (host, SDK, OTEL_RESOURCE_ATTRIBUTES) named `service_name`, unless
    OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) names it otherwise."""
    return Resource.create({SERVICE_NAME: service_name}).merge(OTELResourceDetector().detect())


def outside_any_trace() -> Variables:
    """A copy of the current context with no current span: for background work that a request
    happens to start but that is not part of it (a batch of several chats' settlements). Its
    client spans have no parent, so they are not recorded (RequestScopedSampler); the request
    id and the log context are kept."""
    copied = copy_context()
    copied.run(otel_context.attach, trace.set_span_in_context(trace.INVALID_SPAN, Context()))
    copied.run(_unsampled_headers.set, None)
    return copied


class RequestScopedSampler(sampling.Sampler):
    """Traces start with a request: a client span with no parent is not recorded.

    Such spans come from background loops (the gateway's key-change follower and settlement
    claims, readiness probes), every second or so; recording them would bury the requests'
    traces. Everything else is decided by the configured sampler."""

    def __init__(self, configured: sampling.Sampler) -> None:
        self._configured = configured

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> sampling.SamplingResult:
        if kind is SpanKind.CLIENT:
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid:
                return sampling.SamplingResult(sampling.Decision.DROP)
        return self._configured.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RequestScoped{{{self._configured.get_description()}}}"


def _instrument_clients() -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    AioHttpClientInstrumentor().instrument(url_filter=_url_without_query)
    HTTPXClientInstrumentor().instrument()
    # Commands are recorded as "EVALSHA ? ? ?": the instrumentation replaces every argument.
    RedisInstrumentor().instrument()
    # Command names only, never their documents.
    PymongoInstrumentor().instrument(capture_statement=False)


def _url_without_query(url: yarl.URL) -> str:
    return str(url.with_query(None))


class RedactQuery(SpanProcessor):
    """Query strings are never exported: FastAPI's server span records `url.query` (the admin
    lookup's holds an email); it is replaced as the span starts, before any exporter sees it."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.attributes and "url.query" in span.attributes:
            span.set_attribute("url.query", "REDACTED")

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
