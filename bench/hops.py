"""`python -m bench hops [--chats 300]`: where one chat's time goes at c=1, hop by hop.

The stack (one gateway) runs with every request traced (`OTEL_TRACES_SAMPLER=always_on`) to an
in-process OTLP receiver; one user sends chats one after the other through nginx (the OpenAI
route, the benchmark's body), after a warm-up. For each span of those traces (by service, kind
and name; a span repeated in one trace, such as the gateway's Redis calls, is numbered in start
order) the report gives the median start after the gateway's server span began and the median
duration. Tracing costs time itself (spans are made, every one exported), so the figures are
larger than an untraced chat's: read where the time goes, and take the untraced latency from
`python -m bench run --concurrency 1`.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import Any

import httpx

from bench.points import Options, results_header
from bench.run import data_directory
from bench.stack import openai_body, progress, register_users, running_stack
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

WARMUP_CHATS = 50
ROOT = ("api-gateway", "SERVER", "POST /v1/chat/completions")
WAIT_FOR_SPANS_S = 30.0


def tracing_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


def run_hops(options: Options, *, chats: int) -> dict[str, Any]:
    started = time.time()
    with OtlpReceiver() as receiver, data_directory(options.data_dir) as data_dir:
        stack = running_stack(
            data_dir / "stack",
            log_level=options.log_level,
            gateway_replicas=1,
            extra_env={**options.extra_env, **tracing_env(receiver)},
        )
        with stack as bench:
            public = bench.stack.public_url
            key = register_users(public, 1).keys[0]
            headers = {"authorization": f"Bearer {key}"}
            latencies: list[float] = []
            measured_from = time.time_ns()
            with httpx.Client(base_url=public, headers=headers, timeout=30.0) as client:
                for number in range(WARMUP_CHATS + chats):
                    if number == WARMUP_CHATS:
                        measured_from = time.time_ns()
                    sent = time.perf_counter()
                    client.post("/v1/chat/completions", json=openai_body()).raise_for_status()
                    if number >= WARMUP_CHATS:
                        latencies.append((time.perf_counter() - sent) * 1000)
            progress(f"{chats} chats sent; waiting for their spans")
            traces = wait_for_traces(receiver, since_ns=measured_from, count=chats)
    return {
        **results_header("hops", options, started=started, chats=chats),
        "client_ms": {"p50": round(statistics.median(latencies), 2)},
        "hops": hop_table(traces),
    }


def wait_for_traces(
    receiver: OtlpReceiver, *, since_ns: int, count: int
) -> dict[str, list[ReceivedSpan]]:
    """The spans of each measured chat's trace, by trace id, once every root has arrived (and
    the exports have had time to bring the rest)."""
    deadline = time.monotonic() + WAIT_FOR_SPANS_S
    while True:
        spans = [span for span in receiver.spans() if span.start_ns >= since_ns]
        roots = {s.trace_id for s in spans if (s.service, s.kind, s.name) == ROOT}
        if len(roots) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # the spans that end after the root (the settlement) come in later exports
    traces: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for span in receiver.spans():
        if span.trace_id in roots:
            traces[span.trace_id].append(span)
    return traces


def hop_table(traces: dict[str, list[ReceivedSpan]]) -> list[dict[str, Any]]:
    """Per hop: median start after the root began, median duration, and in how many traces."""
    starts: dict[str, list[float]] = defaultdict(list)
    durations: dict[str, list[float]] = defaultdict(list)
    for spans in traces.values():
        root = next(s for s in spans if (s.service, s.kind, s.name) == ROOT)
        seen: dict[tuple[str, str, str], int] = defaultdict(int)
        for span in sorted(spans, key=lambda s: s.start_ns):
            name = (span.service, span.kind, span.name)
            seen[name] += 1
            hop = " ".join(name) + (f" #{seen[name]}" if seen[name] > 1 else "")
            starts[hop].append((span.start_ns - root.start_ns) / 1e6)
            durations[hop].append(span.duration_ms)
    hops = [
        {
            "hop": hop,
            "start_ms": round(statistics.median(starts[hop]), 2),
            "duration_ms": round(statistics.median(durations[hop]), 2),
            "traces": len(durations[hop]),
        }
        for hop in starts
    ]
    return sorted(hops, key=lambda hop: hop["start_ms"])


def hops_table(results: dict[str, Any]) -> str:
    lines = [f"{'start ms':>9} {'took ms':>8} {'traces':>7}  hop (medians over the chats)"]
    for hop in results["hops"]:
        lines.append(
            f"{hop['start_ms']:9.2f} {hop['duration_ms']:8.2f} {hop['traces']:7d}  {hop['hop']}"
        )
    lines.append(f"client's p50 (traced): {results['client_ms']['p50']:.2f} ms")
    return "\n".join(lines)
