"""CPU per request of a FastAPI route with the server span made three ways: none, the
OpenTelemetry instrumentation (`FastAPIInstrumentor`, what InferGate uses) and FastAPI's own
telemetry (`FastAPI(telemetry=...)`, FastAPI 0.165+), at a sampling ratio.

    uv run --frozen python -m bench.otel_server_cost [--requests 5000] [--ratio 0.1]

Each variant runs in its own interpreter (a process has one tracer provider): an app with one
JSON route called in-process through ASGI, spans ended into an exporter that drops them, so the
figure is the server span's own cost (context extraction, attributes, the span), nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import MutableMapping, Sequence
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

VARIANTS = ("none", "instrumentation", "native")
WARMUP = 500
BODY = b'{"prompt": "How much does a span cost?"}'


class Dropping(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def app_for(variant: str, ratio: float) -> FastAPI:
    if variant != "none":
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
        provider.add_span_processor(SimpleSpanProcessor(Dropping()))
        trace.set_tracer_provider(provider)
    off = {"tracing": False, "metrics": False, "logs": False}
    native = {"operation_spans": False, "metrics": False, "logs": False}
    app = FastAPI(telemetry=native if variant == "native" else off)  # type: ignore[arg-type]

    @app.post("/v1/chat/{model}")
    async def chat(model: str, body: dict[str, Any]) -> dict[str, str]:
        return {"model": model, "prompt": str(body.get("prompt"))}

    if variant == "instrumentation":
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"])
    return app


async def microseconds_per_request(app: FastAPI, requests: int) -> float:
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/llama3",
        "raw_path": b"/v1/chat/llama3",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"gateway")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 4000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(_: MutableMapping[str, Any]) -> None:
        return None

    for _ in range(WARMUP):
        await app(dict(scope), receive, send)
    started = time.process_time()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    return (time.process_time() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--ratio", type=float, default=0.1, help="sampled share (0.1)")
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant here")
    args = parser.parse_args()
    if args.variant is not None:
        app = app_for(args.variant, args.ratio)
        print(f"{asyncio.run(microseconds_per_request(app, args.requests)):.1f}")
        return
    figures: dict[str, float] = {}
    for variant in VARIANTS:
        command = [sys.executable, "-m", "bench.otel_server_cost", "--variant", variant]
        command += ["--requests", str(args.requests), "--ratio", str(args.ratio)]
        figures[variant] = float(
            subprocess.run(command, check=True, capture_output=True, text=True).stdout
        )
    print(f"sampling ratio {args.ratio}: CPU microseconds per request")
    for variant, figure in figures.items():
        added = figure - figures["none"]
        print(f"  {variant:16} {figure:7.1f}   server span: {added:+7.1f}")


if __name__ == "__main__":
    main()
