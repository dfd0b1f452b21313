"""Figures derived from the measured points: CPU per request, the latency a proxy adds over the
LLM called directly, and InferGate against its peer (LiteLLM's proxy) in the same run."""

from __future__ import annotations

from typing import Any

from bench.litellm_proxy import PEER_WORKERS

# InferGate's side of the comparison: the OpenAI route (the very body LiteLLM answers) when it
# was measured, else InferGate's own chat route.
INFERGATE_SCENARIOS = ("openai", "chat")
# Every scenario that goes through a proxy to the LLM: what it adds over `direct`.
PROXY_SCENARIOS = (*INFERGATE_SCENARIOS, *PEER_WORKERS)
# Processes that are neither side's: the LLM both call, and the load generator.
SHARED_PROCESSES = ("llm", "wrk")
BASELINE_PEER = "litellm"  # latency is compared with one worker: the c=1 path of one process
THROUGHPUT_CONCURRENCY = (32, 64)

Runs = dict[tuple[str, int], dict[str, Any]]


def is_llm(name: str) -> bool:
    """The test LLMs' process names: `llm`, `llm-2`, `llm-3`, ... (bench.stack.llm_name)."""
    return name == "llm" or name.startswith("llm-")


def fold_llm_cpu(cpu: dict[str, float]) -> dict[str, float]:
    """Every test LLM's %CPU summed as one `llm` entry (in the first one's place): the figures
    compare stacks with one and with several backends, the test LLMs being one shared cost."""
    folded: dict[str, float] = {}
    for name, pct in cpu.items():
        key = "llm" if is_llm(name) else name
        folded[key] = round(folded.get(key, 0.0) + pct, 1)
    return folded


def cpu_ms_per_request(run: dict[str, Any]) -> dict[str, float]:
    """CPU milliseconds each process spent per request: the budget that bounds throughput
    (2 cores = 2,000 CPU ms per second to share between every process)."""
    if not run["rps"]:
        return {}
    return {
        name: round(pct * 10 / run["rps"], 3)
        for name, pct in run["cpu_percent"].items()
        if name not in ("machine", "outside")
    }


def db_commands_per_request(
    before: dict[str, int], after: dict[str, int], requests: int
) -> dict[str, float]:
    """The database's commands per request over a point, by kind (its `serverStatus`
    opcounters: insert, query, update, delete, getmore, command), background work included: at
    c=1 each command is a message, and the database's CPU goes mostly per command."""
    if requests <= 0:
        return {}
    return {
        kind: round((after.get(kind, 0) - before.get(kind, 0)) / requests, 3)
        for kind in sorted(after)
    }


def added_latency(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each proxy scenario minus the LLM called directly, per concurrency and percentile."""
    by_key: Runs = {(run["scenario"], run["concurrency"]): run for run in runs}
    added = []
    for (scenario, concurrency), run in sorted(by_key.items(), key=lambda item: item[0][1]):
        direct = by_key.get(("direct", concurrency))
        if scenario not in PROXY_SCENARIOS or direct is None:
            continue
        entry: dict[str, Any] = {"scenario": scenario, "concurrency": concurrency}
        for percentile in ("p50", "p95", "p99"):
            key = f"{percentile}_ms"
            entry[key] = round(run[key] - direct[key], 3)
        added.append(entry)
    return added


def side_cpu_ms(run: dict[str, Any]) -> float:
    """CPU ms per request of the side that answered `run`: the peer's own process tree for a
    peer scenario, every process of InferGate's stack otherwise (never the LLM or wrk)."""
    costs: dict[str, float] = run["cpu_ms_per_request"]
    if run["scenario"] in PEER_WORKERS:
        return round(costs.get(run["scenario"], 0.0), 3)
    excluded = (*SHARED_PROCESSES, *PEER_WORKERS)
    return round(sum(ms for name, ms in costs.items() if name not in excluded), 3)


def _ratio(ours: float, theirs: float) -> float | None:
    return round(ours / theirs, 3) if theirs > 0 else None


def _added_latency_c1(by_key: Runs, ours: str) -> dict[str, Any]:
    direct, mine = by_key.get(("direct", 1)), by_key.get((ours, 1))
    theirs = by_key.get((BASELINE_PEER, 1))
    if direct is None or mine is None or theirs is None:
        return {}
    compared: dict[str, Any] = {}
    for percentile in ("p50", "p99"):
        key = f"{percentile}_ms"
        infergate = round(mine[key] - direct[key], 3)
        litellm = round(theirs[key] - direct[key], 3)
        compared[percentile] = {
            "infergate": infergate,
            BASELINE_PEER: litellm,
            "ratio": _ratio(infergate, litellm),
        }
    return compared


def _throughput(by_key: Runs, ours: str, peers: list[str]) -> list[dict[str, Any]]:
    rows = []
    for concurrency in THROUGHPUT_CONCURRENCY:
        mine = by_key.get((ours, concurrency))
        if mine is None:
            continue
        row: dict[str, Any] = {"concurrency": concurrency, "infergate": mine["rps"]}
        for peer in peers:
            theirs = by_key.get((peer, concurrency))
            if theirs is not None:
                row[peer] = theirs["rps"]
                row[f"ratio_{peer}"] = _ratio(mine["rps"], theirs["rps"])
        rows.append(row)
    return rows


def _cpu(by_key: Runs, ours: str, peers: list[str]) -> list[dict[str, Any]]:
    rows = []
    for concurrency in sorted({c for _, c in by_key}):
        row: dict[str, Any] = {"concurrency": concurrency}
        for scenario, side in ((ours, "infergate"), *((peer, peer) for peer in peers)):
            run = by_key.get((scenario, concurrency))
            if run is not None:
                row[side] = side_cpu_ms(run)
        if len(row) > 2:
            rows.append(row)
    return rows


def ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """InferGate against LiteLLM's proxy, from the points of one run ({} without both sides).
    Every ratio is InferGate's figure over the peer's: under 1 is less added latency, over 1
    more throughput."""
    by_key: Runs = {(run["scenario"], run["concurrency"]): run for run in runs}
    measured = {scenario for scenario, _ in by_key}
    ours = next((name for name in INFERGATE_SCENARIOS if name in measured), None)
    peers = [peer for peer in PEER_WORKERS if peer in measured]
    if ours is None or not peers:
        return {}
    return {
        "infergate_scenario": ours,
        "added_latency_c1_ms": _added_latency_c1(by_key, ours),
        "throughput_rps": _throughput(by_key, ours, peers),
        "cpu_ms_per_request": _cpu(by_key, ours, peers),
    }
