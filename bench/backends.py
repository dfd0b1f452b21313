"""`python -m bench backends`: chat with ai-service spread over 1, 2 and 3 test LLMs.

For each count of backends (`--backends`, default 1,2,3) a fresh stack is started with that
many test LLMs (`tests/fake_ollama.py`, each its own process; OLLAMA_URLS names them all), its
users registered and primed; then chat at every concurrency (default 1 and 32) and the floor,
the first test LLM called directly at c=1. The counts run in turn, `--rounds` times (default
2), every other round in reverse order, so a slow spell of the machine does not fall on one
count. The summary takes the medians over rounds and compares each count with one backend.

The test LLM answers at once and is never the bottleneck: on a machine with few cores, more of
them only add processes. What this measures is what the routing (power of two choices over the
backends, a breaker each) costs, not what more backends gain. Each point records every test
LLM's calls (`llm_backends`), so the spread is in the results, and a backend that got no call
stops the benchmark.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence
from typing import Any

from bench.figures import SHARED_PROCESSES
from bench.points import Options, Prepared, measure, results_header
from bench.run import prepared_stack
from bench.stack import progress


def round_orders(counts: Sequence[int], rounds: int) -> list[list[int]]:
    """The counts of each round: as given, then reversed, alternately."""
    return [list(counts) if i % 2 == 0 else list(reversed(counts)) for i in range(rounds)]


def check_spread(backends: int, runs: list[dict[str, Any]]) -> dict[str, int]:
    """Each test LLM's chat calls over the chat points; every one must have had some."""
    calls: dict[str, int] = {}
    for run in runs:
        if run["scenario"] != "chat":
            continue
        for backend in run["llm_backends"]:
            calls[backend["name"]] = calls.get(backend["name"], 0) + backend["chat_calls"]
    idle = [name for name, n in calls.items() if n == 0]
    if len(calls) != backends or idle:
        raise RuntimeError(f"{backends} backends: chat calls {calls}; none reached {idle}")
    return calls


def measure_backends(prepared: Prepared, options: Options) -> list[dict[str, Any]]:
    chat, direct = prepared.targets["chat"], prepared.targets["direct"]
    runs = [measure(prepared, chat, concurrency=c, options=options) for c in options.concurrency]
    return [*runs, measure(prepared, direct, concurrency=1, options=options)]


def run_backends(options: Options, *, counts: Sequence[int], rounds: int) -> dict[str, Any]:
    started = time.time()
    measured: list[dict[str, Any]] = []
    for round_number, order in enumerate(round_orders(counts, rounds), start=1):
        for backends in order:
            progress(f"round {round_number}: {backends} backend(s)")
            spread = dataclasses.replace(options, backends=backends, scenarios=["direct", "chat"])
            with prepared_stack(spread) as prepared:
                runs = measure_backends(prepared, spread)
            entry = {"round": round_number, "backends": backends, "runs": runs}
            entry["chat_calls_by_backend"] = check_spread(backends, runs)
            measured.append(entry)
    return {
        **results_header(
            "backends", options, started=started, backends=list(counts), rounds=rounds
        ),
        "measured": measured,
        "summary": summary(measured, concurrency=options.concurrency),
    }


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def _point(entry: dict[str, Any], scenario: str, concurrency: int) -> dict[str, Any] | None:
    for run in entry["runs"]:
        if run["scenario"] == scenario and run["concurrency"] == concurrency:
            found: dict[str, Any] = run
            return found
    return None


def stack_cpu_ms(run: dict[str, Any]) -> float:
    """CPU ms per request of the stack's own processes (not the test LLMs, not wrk)."""
    costs: dict[str, float] = run["cpu_ms_per_request"]
    return round(sum(ms for name, ms in costs.items() if name not in SHARED_PROCESSES), 3)


def figures_of(entries: list[dict[str, Any]], concurrency: Sequence[int]) -> dict[str, Any]:
    """One count's figures, medians over its rounds: per concurrency chats/s, p50, p99, CPU ms
    per chat (the stack, and each process); at c=1 the latency added over the LLM directly."""
    figures: dict[str, Any] = {"points": {}}
    for c in concurrency:
        points = [p for p in (_point(e, "chat", c) for e in entries) if p is not None]
        processes = sorted({name for p in points for name in p["cpu_ms_per_request"]})
        figures["points"][str(c)] = {
            "rps": _median([p["rps"] for p in points]),
            "p50_ms": _median([p["p50_ms"] for p in points]),
            "p99_ms": _median([p["p99_ms"] for p in points]),
            "stack_cpu_ms": _median([stack_cpu_ms(p) for p in points]),
            "cpu_ms_per_chat": {
                name: _median([p["cpu_ms_per_request"].get(name, 0.0) for p in points])
                for name in processes
            },
        }
    for percentile in ("p50", "p99"):
        added = [
            chat[f"{percentile}_ms"] - direct[f"{percentile}_ms"]
            for chat, direct in ((_point(e, "chat", 1), _point(e, "direct", 1)) for e in entries)
            if chat is not None and direct is not None
        ]
        figures[f"added_{percentile}_ms_c1"] = _median(added)
    return figures


def _ratio(value: float, base: float) -> float | None:
    return round(value / base, 3) if base else None


def versus_one(per_count: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each count against one backend (the lowest count measured): chats/s and stack CPU per
    chat as ratios at every concurrency, the added latency at c=1 as milliseconds over."""
    base = per_count[min(per_count)]
    compared: dict[int, dict[str, Any]] = {}
    for count, figures in per_count.items():
        row: dict[str, Any] = {}
        for c, point in figures["points"].items():
            base_point = base["points"][c]
            row[f"rps_ratio_c{c}"] = _ratio(point["rps"], base_point["rps"])
            row[f"cpu_ratio_c{c}"] = _ratio(point["stack_cpu_ms"], base_point["stack_cpu_ms"])
        for percentile in ("p50", "p99"):
            key = f"added_{percentile}_ms_c1"
            row[f"{key}_over_base"] = round(figures[key] - base[key], 3)
        compared[count] = row
    return compared


def summary(measured: list[dict[str, Any]], *, concurrency: Sequence[int]) -> dict[str, Any]:
    counts = sorted({entry["backends"] for entry in measured})
    per_count = {
        n: figures_of([e for e in measured if e["backends"] == n], concurrency) for n in counts
    }
    compared = versus_one(per_count)
    return {str(n): {**per_count[n], "versus_base": compared[n]} for n in counts}
