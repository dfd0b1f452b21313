"""The results: JSON files under bench/results/, a short table, and the issue's targets checked."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.figures import PROXY_SCENARIOS
from bench.litellm_proxy import PEER_WORKERS

RESULTS_DIR = Path(__file__).with_name("results")


def write_results(results: dict[str, Any], *, directory: Path, label: str) -> list[Path]:
    """`<timestamp>[-label].json` kept as history, and `<label>.json` overwritten."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(results, indent=2) + "\n"
    suffix = "" if label == "latest" else f"-{label}"
    paths = [directory / f"{stamp}{suffix}.json", directory / f"{label}.json"]
    for path in paths:
        path.write_text(text)
    return paths


def _run(results: dict[str, Any], scenario: str, concurrency: int) -> dict[str, Any] | None:
    for run in results["runs"]:
        if run["scenario"] == scenario and run["concurrency"] == concurrency:
            found: dict[str, Any] = run
            return found
    return None


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{'scenario':9} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
        f" {'errors':>7}",
    ]
    for run in results["runs"]:
        lines.append(
            f"{run['scenario']:9} {run['concurrency']:>4} {run['rps']:>9.1f} {run['p50_ms']:>8.2f}"
            f" {run['p95_ms']:>8.2f} {run['p99_ms']:>8.2f} {run['errors']:>7}"
        )
    if results["added_latency_ms"]:
        lines += ["", "added latency (through the proxy minus the LLM directly), ms:"]
        for added in results["added_latency_ms"]:
            lines.append(
                f"  {added.get('scenario', 'chat'):9} c={added['concurrency']:<3}"
                f" p50 {added['p50_ms']:7.2f}  p95 {added['p95_ms']:7.2f}"
                f"  p99 {added['p99_ms']:7.2f}"
            )
    proxied = [run for run in results["runs"] if run["scenario"] in PROXY_SCENARIOS]
    lines += ["", "%CPU per process during proxied runs (100 = one core; outside = other jobs):"]
    for run in proxied:
        cpu = "  ".join(f"{name} {pct:.0f}" for name, pct in run["cpu_percent"].items())
        lines.append(f"  {run['scenario']:9} c={run['concurrency']:<3} {cpu}")
    lines += ["", "CPU ms per request, per process (2 cores = 2,000 ms per second):"]
    for run in proxied:
        costs = run["cpu_ms_per_request"]
        cost = "  ".join(f"{name} {ms:.2f}" for name, ms in costs.items() if ms >= 0.005)
        lines.append(
            f"  {run['scenario']:9} c={run['concurrency']:<3} total {sum(costs.values()):.1f}:"
            f" {cost}"
        )
    lines += ratios_lines(results.get("ratios") or {})
    peaks = "  ".join(f"{name} {mb:.0f}" for name, mb in results["peak_rss_mb"].items())
    lines += ["", f"peak RSS, MB: {peaks}"]
    return "\n".join(lines)


def ratios_lines(ratios: dict[str, Any]) -> list[str]:
    """InferGate against LiteLLM's proxy: each ratio is InferGate's figure over the peer's."""
    if not ratios:
        return []
    ours = ratios["infergate_scenario"]
    lines = [
        "",
        f"InferGate ({ours}) against LiteLLM's proxy, same run (ratio = InferGate / LiteLLM):",
    ]
    for percentile, row in ratios["added_latency_c1_ms"].items():
        lines.append(
            f"  added latency c=1 {percentile}: InferGate {row['infergate']:.2f} ms,"
            f" LiteLLM 1 worker {row['litellm']:.2f} ms, ratio {_figure(row['ratio'])}"
        )
    for row in ratios["throughput_rps"]:
        peers = [key for key in row if key in PEER_WORKERS]
        theirs = ", ".join(
            f"{peer} {row[peer]:.1f} (ratio {_figure(row[f'ratio_{peer}'])})" for peer in peers
        )
        lines.append(
            f"  throughput c={row['concurrency']}: InferGate {row['infergate']:.1f} req/s, {theirs}"
        )
    for row in ratios["cpu_ms_per_request"]:
        sides = ", ".join(f"{side} {ms:.2f}" for side, ms in row.items() if side != "concurrency")
        lines.append(f"  CPU ms per request c={row['concurrency']}: {sides}")
    return lines


def _figure(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}"


def targets(results: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """(target, met or None when not measured in this run, the figure)."""
    checks: list[tuple[str, bool | None, str]] = []
    added = {
        a["concurrency"]: a
        for a in results["added_latency_ms"]
        if a.get("scenario", "chat") == "chat"
    }
    if 1 in added:
        a = added[1]
        ok = a["p50_ms"] <= 3 and a["p99_ms"] <= 10
        checks.append(
            ("added latency c=1: p50 <= 3 ms, p99 <= 10 ms", ok, _ms(a["p50_ms"], a["p99_ms"]))
        )
    c32, c64 = _run(results, "chat", 32), _run(results, "chat", 64)
    if c32 is not None:
        ok = c32["rps"] >= 400 and c32["errors"] == 0
        figure = f"{c32['rps']:.0f} req/s, {c32['errors']} errors"
        checks.append(("chat c=32: >= 400 req/s, 0 errors", ok, figure))
    if c32 is not None and c64 is not None:
        ok = c64["rps"] >= 0.9 * c32["rps"] and c64["p99_ms"] < 250
        figure = f"{c64['rps'] / c32['rps'] * 100:.0f} % of c=32, p99 {c64['p99_ms']:.0f} ms"
        checks.append(("chat c=64: within 10 % of c=32, p99 < 250 ms", ok, figure))
    return checks


def _ms(p50: float, p99: float) -> str:
    return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"


def targets_text(results: dict[str, Any]) -> str:
    lines = ["targets of issue 4:"]
    for name, ok, figure in targets(results):
        verdict = "n/a " if ok is None else ("met " if ok else "MISS")
        lines.append(f"  [{verdict}] {name}: {figure}")
    return "\n".join(lines)


def backends_table(results: dict[str, Any]) -> str:
    """`python -m bench backends`: per count of test LLMs, medians over rounds, and each count
    against one backend (ratio = N backends / 1)."""
    concurrency = results["options"]["concurrency"]
    lines = [f"chat through N test LLMs, medians of {results['options']['rounds']} round(s):"]
    for count, figures in results["summary"].items():
        versus = figures["versus_base"]
        for c in concurrency:
            point = figures["points"][str(c)]
            lines.append(
                f"  N={count} c={c:<3} {point['rps']:7.1f} chats/s"
                f" (x{_figure(versus[f'rps_ratio_c{c}'])})  p50 {point['p50_ms']:6.2f}"
                f"  p99 {point['p99_ms']:6.2f} ms  stack CPU {point['stack_cpu_ms']:5.2f} ms/chat"
                f" (x{_figure(versus[f'cpu_ratio_c{c}'])})"
            )
        lines.append(
            f"  N={count} added c=1: p50 {figures['added_p50_ms_c1']:.2f} ms"
            f" ({versus['added_p50_ms_c1_over_base']:+.2f}), p99"
            f" {figures['added_p99_ms_c1']:.2f} ms ({versus['added_p99_ms_c1_over_base']:+.2f})"
        )
        top = figures["points"][str(max(concurrency))]["cpu_ms_per_chat"]
        cost = "  ".join(f"{name} {ms:.2f}" for name, ms in top.items() if ms >= 0.005)
        lines.append(f"  N={count} CPU ms per chat c={max(concurrency)}: {cost}")
    spread = [
        f"round {e['round']} N={e['backends']}: {e['chat_calls_by_backend']}"
        for e in results["measured"]
    ]
    return "\n".join([*lines, "", "chat calls per test LLM:", *(f"  {s}" for s in spread)])


def cache_table(results: dict[str, Any]) -> str:
    """`python -m bench cache`: a hit, a miss and an uncached chat per concurrency."""
    lines = [f"{'scenario':11} {'conc':>4} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>7}"]
    for concurrency, row in results["summary"].items():
        for name, point in row.items():
            if name == "hit_over_miss":
                continue
            lines.append(
                f"{name:11} {concurrency:>4} {point['rps']:8.1f} {point['p50_ms']:7.2f}"
                f" {point['p99_ms']:7.2f} {point['stack_cpu_ms']:7.2f}"
            )
        ratio = row.get("hit_over_miss")
        if ratio:
            lines.append(
                "  hit / miss: " + ", ".join(f"{k} {_figure(v)}" for k, v in ratio.items())
            )
    lines += ["", "CPU ms per request, per process:"]
    for run in results["runs"]:
        costs = run["cpu_ms_per_request"]
        cost = "  ".join(f"{name} {ms:.2f}" for name, ms in costs.items() if ms >= 0.005)
        lines.append(f"  {run['scenario']:10} c={run['concurrency']:<3} {cost}")
    return "\n".join(lines)
