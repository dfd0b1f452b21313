"""An OTLP/HTTP trace receiver for tests: what a collector would be sent, decoded and kept.

It answers `POST /v1/traces` as a collector does (protobuf `ExportTraceServiceRequest` in, an
empty `ExportTraceServiceResponse` out; gzip accepted) and keeps every span it was sent, with its
service's name, flattened to plain values. Tests start it on a free loopback port, point
`OTEL_EXPORTER_OTLP_ENDPOINT` at `url`, and wait for the spans they expect with `wait_for`:

    with OtlpReceiver() as receiver:
        ...
        spans = receiver.wait_for(lambda spans: any(s.name == "chat llama3" for s in spans))

A stdlib server on its own thread: the services export from their processes at any moment, and
the test's event loop does not have to serve it.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.started import Started

TRACES_PATH = "/v1/traces"

AttributeValue = str | bool | int | float | bytes | tuple["AttributeValue", ...] | None


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span; ids in lowercase hex (`parent_span_id` is "" for a root span)."""

    service: str
    scope: str  # the instrumentation that made it (its tracer's name)
    name: str
    kind: str  # "SERVER", "CLIENT", "INTERNAL", ...
    trace_id: str
    span_id: str
    parent_span_id: str
    trace_state: str
    attributes: Mapping[str, AttributeValue]
    start_ns: int = 0  # Unix time in nanoseconds
    end_ns: int = 0

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def any_value(value: AnyValue) -> AttributeValue:
    """An OTLP attribute value as a Python value (arrays as tuples, maps as key=value pairs)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(any_value(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return tuple(f"{pair.key}={any_value(pair.value)!r}" for pair in value.kvlist_value.values)
    decoded: AttributeValue = getattr(value, kind)
    return decoded


def attributes(pairs: list[KeyValue]) -> dict[str, AttributeValue]:
    return {pair.key: any_value(pair.value) for pair in pairs}


def decode_spans(body: bytes) -> list[ReceivedSpan]:
    """Every span of one `ExportTraceServiceRequest`, with its service and instrumentation."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    received: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        service = str(attributes(list(resource_spans.resource.attributes)).get("service.name"))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                received.append(
                    ReceivedSpan(
                        service=service,
                        scope=scope_spans.scope.name,
                        name=span.name,
                        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        trace_state=span.trace_state,
                        attributes=attributes(list(span.attributes)),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                    )
                )
    return received


class _Handler(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != TRACES_PATH:
            self._answer(404, b"")
            return
        self.server.receiver.exports += 1
        if self.server.receiver.keep_spans:
            self.server.receiver.add(decode_spans(body))
        self._answer(200, ExportTraceServiceResponse().SerializeToString())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a request line per export would fill the test output."""


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: OtlpReceiver) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.receiver = receiver


class OtlpReceiver(Started):
    """The receiver on 127.0.0.1 and a free port (started with `with` or `start`).

    `keep_spans=False` only accepts and counts the exports (`exports`), as the benchmark needs:
    decoding would take CPU from the stack it measures."""

    def __init__(self, *, keep_spans: bool = True) -> None:
        self.keep_spans = keep_spans
        self.exports = 0
        self._spans: list[ReceivedSpan] = []
        self._changed = threading.Condition()
        self._server = _ReceiverServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it (exporters add /v1/traces)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def add(self, spans: list[ReceivedSpan]) -> None:
        with self._changed:
            self._spans.extend(spans)
            self._changed.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far."""
        with self._changed:
            return list(self._spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans() if span.trace_id == trace_id]

    def wait_for(
        self, ready: Callable[[list[ReceivedSpan]], bool], *, timeout_s: float = 15.0
    ) -> list[ReceivedSpan]:
        """Every span received, once `ready` holds for them (woken by each export); raises
        TimeoutError with what did arrive if it does not hold within `timeout_s`."""
        with self._changed:
            if not self._changed.wait_for(lambda: ready(list(self._spans)), timeout=timeout_s):
                names = sorted({f"{span.service}: {span.name}" for span in self._spans})
                raise TimeoutError(f"the spans expected did not arrive; received: {names}")
            return list(self._spans)
