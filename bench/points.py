"""One measured point: wrk at one concurrency after a warm-up, with every process's CPU around
it and the test LLM's calls counted (each answered request of a scenario through a proxy must
have reached the LLM: a proxy answering from elsewhere would not be measuring the same thing)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench.facts import code_version, machine
from bench.figures import (
    PROXY_SCENARIOS,
    cpu_ms_per_request,
    db_commands_per_request,
    fold_llm_cpu,
)
from bench.procs import CpuMeter, RssSampler
from bench.stack import BenchStack, llm_name, progress
from bench.wrk import Target, WrkResult, run_wrk

# Every answer of these must have reached the LLM.
LLM_SCENARIOS = ("direct", *PROXY_SCENARIOS, "cache-miss")
# The x-infergate-cache header every answer of these must carry; a hit never reaches the LLM.
EXPECTED_CACHE_HEADER = {"cache-hit": "hit", "cache-miss": "miss"}


@dataclass(frozen=True)
class Options:
    users: int
    duration_s: float
    warmup_s: float
    concurrency: Sequence[int]
    scenarios: Sequence[str]
    log_level: str
    data_dir: Path | None
    gateway_replicas: int = 1
    # Processes of the other services (and the gateway's, over gateway_replicas): --replicas.
    replicas: Mapping[str, int] = field(default_factory=dict)
    extra_env: Mapping[str, str] = field(default_factory=dict)  # for every service
    backends: int = 1  # test LLMs, ai-service spread over them (OLLAMA_URLS)


@dataclass
class Prepared:
    """A running stack with its users registered, ready for load."""

    bench: BenchStack
    targets: dict[str, Target]
    sampler: RssSampler
    registration: dict[str, Any]
    files: dict[str, Path]
    data_dir: Path


def cpu_report(cpu: dict[str, float], result: WrkResult) -> dict[str, float]:
    """The meter's figures plus wrk's, and `outside`: whatever else ran on the machine besides
    the stack and wrk (other jobs on the same cores skew the figures; this shows by how much)."""
    cpu = {**cpu, "wrk": round(result.wrk_cpu_s / result.duration_s * 100, 1)}
    own = sum(pct for name, pct in cpu.items() if name != "machine")
    cpu["outside"] = round(max(0.0, cpu["machine"] - own), 1)
    return cpu


def check_answers(name: str, *, concurrency: int, result: WrkResult, llm_calls: int) -> None:
    """Stop the benchmark when a point did not measure what it is named after: answers that did
    not reach the LLM, a hit that did, an answer the cache did not mark as expected."""
    answered = sum(n for status, n in result.statuses.items() if status.startswith("2"))
    point = f"{name} c={concurrency}"
    if name in LLM_SCENARIOS and llm_calls < answered:
        raise RuntimeError(f"{point}: {answered} answered, the LLM saw {llm_calls} calls")
    if name == "cache-hit" and llm_calls:
        raise RuntimeError(f"{point}: the LLM saw {llm_calls} calls during cache hits")
    expected = EXPECTED_CACHE_HEADER.get(name)
    if expected is not None and result.cache.get(expected, 0) != answered:
        raise RuntimeError(f"{point}: {answered} answered, x-infergate-cache {result.cache}")


def backend_spread(
    calls: list[int], cpu: dict[str, float], stack: BenchStack
) -> list[dict[str, Any]]:
    """Each test LLM's share of the point: its chat calls and %CPU."""
    return [
        {"name": llm_name(i), "url": llm.url, "chat_calls": n, "cpu_percent": cpu.get(llm_name(i))}
        for i, (llm, n) in enumerate(zip(stack.llms, calls, strict=True))
    ]


def measure(
    prepared: Prepared,
    target: Target,
    *,
    concurrency: int,
    options: Options,
    extra_pids: Mapping[str, int] | None = None,
) -> Any:
    """Warm up, then one measured wrk run with the CPU of every process around it (the stack's
    and `extra_pids`, a peer's) and the test LLM's calls counted."""
    if options.warmup_s > 0:
        run_wrk(target, concurrency=concurrency, seconds=options.warmup_s)
    stack = prepared.bench
    calls_before = stack.llm_chat_calls()
    commands_before = db_opcounters(stack.stack.mongo_uri)
    meter = CpuMeter({**prepared.sampler.pids, **(extra_pids or {})})
    meter.start()
    result = run_wrk(target, concurrency=concurrency, seconds=options.duration_s)
    each = meter.stop()
    commands = db_commands_per_request(
        commands_before, db_opcounters(stack.stack.mongo_uri), result.requests
    )
    cpu = cpu_report(fold_llm_cpu(each), result)
    calls = [
        after - before for after, before in zip(stack.llm_chat_calls(), calls_before, strict=True)
    ]
    llm_calls = sum(calls)
    check_answers(target.name, concurrency=concurrency, result=result, llm_calls=llm_calls)
    progress(
        f"{target.name:8} c={concurrency:<3} {result.rps:8.1f} req/s  p50 {result.p50_ms:7.2f}"
        f"  p99 {result.p99_ms:7.2f} ms  errors {result.errors}  database commands per"
        f" request {sum(commands.values()):.2f}  (outside load {cpu['outside']:.0f} %CPU)"
    )
    run = {"scenario": target.name, "concurrency": concurrency, **result.as_dict()}
    run["llm_calls"] = llm_calls
    run["llm_backends"] = backend_spread(calls, each, stack)
    run["cpu_percent"] = cpu
    run["cpu_ms_per_request"] = cpu_ms_per_request(run)
    run["db_commands_per_request"] = commands
    return run


def db_opcounters(mongo_uri: str) -> dict[str, int]:
    """The database's command counts so far (`serverStatus` opcounters)."""
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as client:
        counters = client.admin.command("serverStatus").get("opcounters", {})
    return {str(kind): int(count) for kind, count in counters.items()}


def results_header(
    kind: str, options: Options, *, started: float, **more_options: Any
) -> dict[str, Any]:
    """The head of a results file: what was measured, on what machine and code, how long it
    took, and the options every mode shares (plus its own)."""
    return {
        "kind": kind,
        "machine": machine(),
        "code": code_version(),
        "wall_s": round(time.time() - started, 1),
        "options": {
            "users": options.users,
            "duration_s": options.duration_s,
            "warmup_s": options.warmup_s,
            "concurrency": list(options.concurrency),
            "gateway_replicas": options.gateway_replicas,
            **more_options,
        },
    }
