"""The side-by-side benchmark: the test LLM directly, /healthz, /v1/chat and /v1/chat/completions
through nginx, and LiteLLM's proxy (1 and 2 workers) in front of the same LLM, at each
concurrency, with every process's %CPU during each run and its peak memory over the whole run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from bench.facts import code_version, machine, machine_busy_percent
from bench.figures import added_latency, ratios
from bench.litellm_proxy import PEER_WORKERS
from bench.litellm_venv import ensure_litellm_venv
from bench.peer import measure_peer, peer_record
from bench.points import Options, Prepared, measure
from bench.priming import prime
from bench.procs import RssSampler
from bench.stack import (
    BenchStack,
    check_chat,
    check_openai_chat,
    progress,
    register_users,
    running_stack,
    write_inputs,
)
from bench.wrk import Target

SCENARIOS = ("direct", "healthz", "chat", "openai", *PEER_WORKERS)
# Measured first, right after priming and one after the other, so the users stay active.
ACTIVE_USER_SCENARIOS = ("chat", "openai")
# Of `python -m bench cache` (bench/cache.py): the stack started with the response cache on.
CACHE_SCENARIOS = ("cache-hit", "cache-miss")
# What the users are primed with: the first of these the run measures.
PRIMING_SCENARIOS = ("chat", "openai", "cache-hit")
BUSY_WARNING_PERCENT = 20.0


def targets(bench: BenchStack, files: dict[str, Path]) -> dict[str, Target]:
    public = bench.stack.public_url
    completions = f"{public}/v1/chat/completions"
    cached = {
        name: Target(
            name,
            completions,
            "POST",
            files[name],
            files["keys"],
            key_header="authorization",
            unique=name == "cache-miss",
        )
        for name in CACHE_SCENARIOS
    }
    return {
        **cached,
        "direct": Target("direct", f"{bench.llm.url}/api/chat", "POST", files["llm"], None),
        "healthz": Target("healthz", f"{public}/healthz", "GET", None, None),
        "chat": Target("chat", f"{public}/v1/chat", "POST", files["chat"], files["keys"]),
        "openai": Target(
            "openai",
            f"{public}/v1/chat/completions",
            "POST",
            files["openai"],
            files["keys"],
            key_header="authorization",
        ),
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
            backends=options.backends,
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
                check_openai_chat(bench.stack.public_url, done.keys[0])
                files = write_inputs(data_dir / "inputs", done.keys)
                all_targets = targets(bench, files)
                primed_with = [name for name in PRIMING_SCENARIOS if name in options.scenarios]
                if primed_with:
                    prime(bench, all_targets[primed_with[0]])
                registration: dict[str, Any] = {
                    "users": len(done.keys),
                    "seconds": round(done.seconds, 1),
                    "per_s": round(len(done.keys) / done.seconds, 1),
                    "retried_failures": done.failures,
                }
                yield Prepared(bench, all_targets, sampler, registration, files, data_dir)


def measure_all(
    prepared: Prepared, order: list[str], *, peer_python: Path | None, options: Options
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Every scenario at every concurrency, in `order`; a peer's proxy is started for its
    points only. Returns the points and the peers' peak memory."""
    runs: list[dict[str, Any]] = []
    peer_peaks: dict[str, float] = {}
    for name in order:
        if name in PEER_WORKERS and peer_python is not None:
            peer = measure_peer(prepared, name, python=peer_python, options=options)
            runs += peer.runs
            peer_peaks.update(peer.peak_rss_mb)
            continue
        for concurrency in options.concurrency:
            target = prepared.targets[name]
            runs.append(measure(prepared, target, concurrency=concurrency, options=options))
    runs.sort(key=lambda run: (run["concurrency"], SCENARIOS.index(run["scenario"])))
    return runs, peer_peaks


def run_benchmark(options: Options) -> dict[str, Any]:
    started = datetime.now(UTC)
    # The chat points first, right after priming and one after the other, so the users stay
    # active (a key unused for KEY_CACHE_SECONDS is verified again); reported in the usual order.
    order = sorted(options.scenarios, key=lambda name: name not in ACTIVE_USER_SCENARIOS)
    peers = [name for name in order if name in PEER_WORKERS]
    # Built (first run only) before the stack starts, so no stack idles while uv installs.
    peer_python = ensure_litellm_venv(progress=progress) if peers else None
    with prepared_stack(options) as prepared:
        runs, peer_peaks = measure_all(prepared, order, peer_python=peer_python, options=options)
        peak = {**prepared.sampler.peak_mb(), **peer_peaks}
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
        "peer": peer_record(peers),
        "runs": runs,
        "added_latency_ms": added_latency(runs),
        "ratios": ratios(runs),
        "peak_rss_mb": peak,
    }
