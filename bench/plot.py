"""The PNG: latency percentiles and throughput against concurrency, one colour per scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The Figure API without pyplot: no global state, no GUI backend, files only.
from matplotlib.figure import Figure

COLOURS = {"direct": "tab:green", "healthz": "tab:blue", "chat": "tab:red"}
STYLES = {"p50_ms": "-", "p95_ms": "--", "p99_ms": ":"}
LABELS = {
    "direct": "test LLM directly",
    "healthz": "GET /healthz via nginx",
    "chat": "POST /v1/chat via nginx",
}


def _series(results: dict[str, Any], scenario: str, key: str) -> tuple[list[int], list[float]]:
    runs = sorted(
        (run for run in results["runs"] if run["scenario"] == scenario),
        key=lambda run: run["concurrency"],
    )
    return [run["concurrency"] for run in runs], [float(run[key]) for run in runs]


def plot(results: dict[str, Any], path: Path) -> Path:
    scenarios = [s for s in COLOURS if any(r["scenario"] == s for r in results["runs"])]
    figure = Figure(figsize=(12, 4.8))
    latency, throughput = figure.subplots(1, 2)
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
    options = results["options"]
    latency.set(title="Latency (p50 solid, p95 dashed, p99 dotted)", ylabel="ms", yscale="log")
    throughput.set(title="Throughput", ylabel="requests/s", yscale="log")
    for axes in (latency, throughput):
        axes.set(xlabel="concurrent connections (wrk -c)", xscale="log")
        axes.set_xticks(options["concurrency"], [str(c) for c in options["concurrency"]])
        axes.tick_params(axis="x", which="minor", labelbottom=False)
        axes.grid(True, which="both", alpha=0.3)
    latency.legend(fontsize=8)
    throughput.legend(fontsize=8)
    figure.suptitle(
        f"InferGate, {options['users']} users, {results['machine']['cpus']} CPUs shared by all,"
        f" LOG_LEVEL={options['log_level']}, {options['duration_s']:.0f} s per point"
        f" ({results['started']})",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
