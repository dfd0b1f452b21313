"""The benchmark's hop-by-hop report, its pure part: spans of several traces folded into one row
per hop (median start after the gateway's server span, median duration, repeats numbered)."""

from __future__ import annotations

from bench.hops import ROOT, hop_table, hops_table
from tests.otlp_receiver import ReceivedSpan

MS = 1_000_000  # nanoseconds


def span(
    trace: str, service: str, kind: str, name: str, start_ms: float, end_ms: float
) -> ReceivedSpan:
    return ReceivedSpan(
        service=service,
        scope="test",
        name=name,
        kind=kind,
        trace_id=trace,
        span_id=f"{trace}-{name}-{start_ms}",
        parent_span_id="",
        trace_state="",
        attributes={},
        start_ns=int(1_000 * MS + start_ms * MS),
        end_ns=int(1_000 * MS + end_ms * MS),
    )


def chat_trace(trace: str, shift_ms: float, reserve_ms: float) -> list[ReceivedSpan]:
    """A chat whose clock starts `shift_ms` later: server span, two Redis calls, a reservation."""
    return [
        span(trace, *ROOT, shift_ms, shift_ms + 10),
        span(trace, "api-gateway", "CLIENT", "EVALSHA", shift_ms + 1, shift_ms + 1.5),
        span(
            trace,
            "usage-service",
            "SERVER",
            "POST /usage/reserve",
            shift_ms + 2,
            shift_ms + 2 + reserve_ms,
        ),
        span(trace, "api-gateway", "CLIENT", "EVALSHA", shift_ms + 8, shift_ms + 8.25),
    ]


def test_hops_are_medians_relative_to_each_chats_own_start() -> None:
    traces = {
        "a": chat_trace("a", 0, reserve_ms=3),
        "b": chat_trace("b", 500, reserve_ms=5),
        "c": chat_trace("c", 900, reserve_ms=4),
    }
    rows = hop_table(traces)
    assert [row["hop"] for row in rows] == [
        "api-gateway SERVER POST /v1/chat/completions",
        "api-gateway CLIENT EVALSHA",
        "usage-service SERVER POST /usage/reserve",
        "api-gateway CLIENT EVALSHA #2",
    ]
    by_hop = {row["hop"]: row for row in rows}
    assert by_hop["usage-service SERVER POST /usage/reserve"] == {
        "hop": "usage-service SERVER POST /usage/reserve",
        "start_ms": 2.0,
        "duration_ms": 4.0,
        "traces": 3,
    }
    assert by_hop["api-gateway CLIENT EVALSHA #2"]["start_ms"] == 8.0
    assert by_hop["api-gateway CLIENT EVALSHA #2"]["duration_ms"] == 0.25
    text = hops_table({"hops": rows, "client_ms": {"p50": 11.5}})
    assert "usage-service SERVER POST /usage/reserve" in text
    assert text.endswith("client's p50 (traced): 11.50 ms")
