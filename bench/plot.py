"""The PNG: latency percentiles, throughput and each proxy's CPU per request against
concurrency, one colour per scenario (InferGate red and orange, LiteLLM's proxy blue and
purple, side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The Figure API without pyplot: no global state, no GUI backend, files only.
from matplotlib.figure import Figure

from bench.figures import PROXY_SCENARIOS, side_cpu_ms

COLOURS = {
    "direct": "tab:green",
    "healthz": "tab:gray",
    "chat": "tab:red",
    "openai": "tab:orange",
    "litellm": "tab:blue",
    "litellm-2": "tab:purple",
}
STYLES = {"p50_ms": "-", "p95_ms": "--", "p99_ms": ":"}
LABELS = {
    "direct": "test LLM directly",
    "healthz": "GET /healthz via nginx",
    "chat": "POST /v1/chat via nginx",
    "openai": "InferGate: POST /v1/chat/completions via nginx",
    "litellm": "LiteLLM proxy, 1 worker: the same request",
    "litellm-2": "LiteLLM proxy, 2 workers: the same request",
}


def _runs(results: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    return sorted(
        (run for run in results["runs"] if run["scenario"] == scenario),
        key=lambda run: run["concurrency"],
    )


def _series(results: dict[str, Any], scenario: str, key: str) -> tuple[list[int], list[float]]:
    runs = _runs(results, scenario)
    return [run["concurrency"] for run in runs], [float(run[key]) for run in runs]


def _cpu_series(results: dict[str, Any], scenario: str) -> tuple[list[int], list[float]]:
    runs = _runs(results, scenario)
    return [run["concurrency"] for run in runs], [side_cpu_ms(run) for run in runs]


def plot(results: dict[str, Any], path: Path) -> Path:
    scenarios = [s for s in COLOURS if any(r["scenario"] == s for r in results["runs"])]
    figure = Figure(figsize=(18, 5.4))
    latency, throughput, cpu = figure.subplots(1, 3)
    for scenario in scenarios:
        for key, style in STYLES.items():
            x, y = _series(results, scenario, key)
            latency.plot(
                x,
                y,
                style,
                marker="o",
                color=COLOURS[scenario],
                label=LABELS[scenario] if key == "p50_ms" else "_nolegend_",
            )
        x, y = _series(results, scenario, "rps")
        throughput.plot(x, y, "-", marker="o", color=COLOURS[scenario], label=LABELS[scenario])
        if scenario in PROXY_SCENARIOS:
            x, y = _cpu_series(results, scenario)
            cpu.plot(x, y, "-", marker="o", color=COLOURS[scenario], label=LABELS[scenario])
    options = results["options"]
    latency.set(title="Latency (p50 solid, p95 dashed, p99 dotted)", ylabel="ms", yscale="log")
    throughput.set(title="Throughput", ylabel="requests/s", yscale="log")
    cpu.set(title="CPU per request, the proxy's own processes", ylabel="CPU ms", ylim=(0, None))
    for axes in (latency, throughput, cpu):
        axes.set(xlabel="concurrent connections (wrk -c)", xscale="log")
        axes.set_xticks(options["concurrency"], [str(c) for c in options["concurrency"]])
        axes.tick_params(axis="x", which="minor", labelbottom=False)
        axes.grid(True, which="both", alpha=0.3)
    for axes in (latency, throughput, cpu):
        axes.legend(fontsize=8)
    figure.suptitle(
        f"InferGate, {options['users']} users, {results['machine']['cpus']} CPUs shared by all,"
        f" LOG_LEVEL={options['log_level']}, {options['duration_s']:.0f} s per point"
        f" ({results['started']})"
        + (f"; peer: {results['peer']['requirement']}" if results.get("peer") else ""),
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
