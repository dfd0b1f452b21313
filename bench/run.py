"""The side-by-side benchmark: the test LLM directly, /healthz and /v1/chat through nginx, at each
concurrency, with every process's %CPU during each run and its peak memory over the whole run."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from bench.facts import code_version, machine, machine_busy_percent
from bench.procs import CpuMeter, RssSampler
from bench.stack import (
    BenchStack,
    check_chat,
    progress,
    register_users,
    running_stack,
    write_inputs,
)
from bench.wrk import Target, WrkResult, run_wrk

SCENARIOS = ("direct", "healthz", "chat")
BUSY_WARNING_PERCENT = 20.0


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


@dataclass
class Prepared:
    """A running stack with its users registered, ready for load."""

    bench: BenchStack
    targets: dict[str, Target]
    sampler: RssSampler
    registration: dict[str, Any]


def targets(bench: BenchStack, files: dict[str, Path]) -> dict[str, Target]:
    public = bench.stack.public_url
    return {
        "direct": Target("direct", f"{bench.llm.url}/api/chat", "POST", files["llm"], None),
        "healthz": Target("healthz", f"{public}/healthz", "GET", None, None),
        "chat": Target("chat", f"{public}/v1/chat", "POST", files["chat"], files["keys"]),
    }


@contextmanager
def data_directory(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with TemporaryDirectory(prefix="infergate-bench-") as tmp:
        yield Path(tmp)


@contextmanager
def prepared_stack(options: Options, *, keep_series: bool = False) -> Iterator[Prepared]:
    """Start the stack, sample its memory, register the users, check one chat."""
    busy = machine_busy_percent()
    if busy > BUSY_WARNING_PERCENT:
        progress(f"warning: the machine is already {busy:.0f} %CPU busy; figures will be low")
    with data_directory(options.data_dir) as data_dir:
        progress(f"starting the stack in {data_dir} (LOG_LEVEL={options.log_level})")
        stack = running_stack(
            data_dir / "stack",
            log_level=options.log_level,
            gateway_replicas=options.gateway_replicas,
            replicas=options.replicas,
            extra_env=options.extra_env,
        )
        with stack as bench:
            pids = bench.pids()
            progress("processes: " + " ".join(f"{name}={pid}" for name, pid in pids.items()))
            with RssSampler(pids, keep_series=keep_series) as sampler:
                progress(f"registering {options.users} users through {bench.stack.public_url}")
                done = register_users(bench.stack.public_url, options.users)
                progress(f"registered {len(done.keys)} users in {done.seconds:.1f} s")
                for failure in done.failures:
                    progress(f"registration retried after: {failure}")
                check_chat(bench.stack.public_url, done.keys[0])
                files = write_inputs(data_dir / "inputs", done.keys)
                all_targets = targets(bench, files)
                if "chat" in options.scenarios:
                    prime(bench, all_targets["chat"], users=len(done.keys))
                registration: dict[str, Any] = {
                    "users": len(done.keys),
                    "seconds": round(done.seconds, 1),
                    "per_s": round(len(done.keys) / done.seconds, 1),
                    "retried_failures": done.failures,
                }
                yield Prepared(bench, all_targets, sampler, registration)


PRIMING_CONCURRENCY = 32
PRIMING_MARGIN = 1.1


def prime(bench: BenchStack, chat: Target, *, users: int) -> None:
    """About one chat per user on each gateway replica (called directly, not through nginx)
    before anything is measured, so every point sees the steady state of active users: each key
    verified and cached by each replica, each month's quota figures known (a first request per
    user and replica costs an auth-service call and a MongoDB read more; see bench/README.md)."""
    started = time.monotonic()
    sent = 0
    for port in bench.stack.gateway_ports:
        direct = dataclasses.replace(chat, url=f"http://127.0.0.1:{port}/v1/chat")
        on_replica = 0
        while on_replica < users * PRIMING_MARGIN:
            seconds = max(2.0, (users * PRIMING_MARGIN - on_replica) / 400)
            on_replica += run_wrk(direct, concurrency=PRIMING_CONCURRENCY, seconds=seconds).requests
        sent += on_replica
    progress(f"primed: {sent} chats for {users} users in {time.monotonic() - started:.0f} s")


def cpu_report(cpu: dict[str, float], result: WrkResult) -> dict[str, float]:
    """The meter's figures plus wrk's, and `outside`: whatever else ran on the machine besides
    the stack and wrk (other jobs on the same cores skew the figures; this shows by how much)."""
    cpu = {**cpu, "wrk": round(result.wrk_cpu_s / result.duration_s * 100, 1)}
    own = sum(pct for name, pct in cpu.items() if name != "machine")
    cpu["outside"] = round(max(0.0, cpu["machine"] - own), 1)
    return cpu


def measure(prepared: Prepared, target: Target, *, concurrency: int, options: Options) -> Any:
    """Warm up, then one measured wrk run with the CPU of every process around it."""
    if options.warmup_s > 0:
        run_wrk(target, concurrency=concurrency, seconds=options.warmup_s)
    meter = CpuMeter(prepared.sampler.pids)
    meter.start()
    result = run_wrk(target, concurrency=concurrency, seconds=options.duration_s)
    cpu = cpu_report(meter.stop(), result)
    progress(
        f"{target.name:8} c={concurrency:<3} {result.rps:8.1f} req/s  p50 {result.p50_ms:7.2f}"
        f"  p99 {result.p99_ms:7.2f} ms  errors {result.errors}  (outside load"
        f" {cpu['outside']:.0f} %CPU)"
    )
    run = {"scenario": target.name, "concurrency": concurrency, **result.as_dict()}
    run["cpu_percent"] = cpu
    run["cpu_ms_per_request"] = cpu_ms_per_request(run)
    return run


def added_latency(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat through nginx minus the LLM called directly, per concurrency and percentile."""
    by_key = {(run["scenario"], run["concurrency"]): run for run in runs}
    added = []
    for (scenario, concurrency), chat in sorted(by_key.items(), key=lambda item: item[0][1]):
        direct = by_key.get(("direct", concurrency))
        if scenario != "chat" or direct is None:
            continue
        entry: dict[str, Any] = {"concurrency": concurrency}
        for percentile in ("p50", "p95", "p99"):
            key = f"{percentile}_ms"
            entry[key] = round(chat[key] - direct[key], 3)
        added.append(entry)
    return added


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


def run_benchmark(options: Options) -> dict[str, Any]:
    started = datetime.now(UTC)
    runs: list[dict[str, Any]] = []
    # The chat points first, right after priming and one after the other, so the users stay
    # active (a key unused for KEY_CACHE_SECONDS is verified again); reported in the usual order.
    order = sorted(options.scenarios, key=lambda name: name != "chat")
    with prepared_stack(options) as prepared:
        for name in order:
            for concurrency in options.concurrency:
                target = prepared.targets[name]
                runs.append(measure(prepared, target, concurrency=concurrency, options=options))
        runs.sort(key=lambda run: (run["concurrency"], SCENARIOS.index(run["scenario"])))
        peak = prepared.sampler.peak_mb()
        registration = prepared.registration
    return {
        "kind": "benchmark",
        "started": started.isoformat(timespec="seconds"),
        "wall_s": round(time.time() - started.timestamp(), 1),
        "machine": machine(),
        "code": code_version(),
        "options": {
            "users": options.users,
            "duration_s": options.duration_s,
            "warmup_s": options.warmup_s,
            "concurrency": list(options.concurrency),
            "scenarios": list(options.scenarios),
            "log_level": options.log_level,
            "gateway_replicas": options.gateway_replicas,
            "replicas": dict(options.replicas),
        },
        "registration": registration,
        "runs": runs,
        "added_latency_ms": added_latency(runs),
        "peak_rss_mb": peak,
    }
