"""The soak: chat through nginx at one concurrency for minutes, each process's memory sampled
every 0.5 s. Memory must stay flat (growth under 1 MB/minute) and errors at 0."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bench.facts import code_version, machine
from bench.points import Options, cpu_report
from bench.procs import CpuMeter, RssSample
from bench.run import prepared_stack
from bench.stack import progress
from bench.wrk import run_wrk

FLAT_MB_PER_MIN = 1.0
# Databases grow with the data they hold (the request log gets a document per chat): shown, but
# the verdict is about InferGate's own processes, nginx and the test LLM.
DATASTORES = ("redis", "mongo")


def slope_mb_per_min(samples: list[RssSample], name: str) -> float:
    """Least-squares growth of one process's RSS over the samples."""
    xs = [s.t_s / 60 for s in samples]
    ys = [s.rss_kb[name] / 1024 for s in samples]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def memory_report(samples: list[RssSample]) -> dict[str, dict[str, float]]:
    first, last = samples[0], samples[-1]
    return {
        name: {
            "start_mb": round(first.rss_kb[name] / 1024, 1),
            "end_mb": round(last.rss_kb[name] / 1024, 1),
            "peak_mb": round(max(s.rss_kb[name] for s in samples) / 1024, 1),
            "growth_mb_per_min": round(slope_mb_per_min(samples, name), 3),
        }
        for name in first.rss_kb
    }


def run_soak(options: Options, *, minutes: float) -> dict[str, Any]:
    (concurrency,) = options.concurrency
    started = datetime.now(UTC)
    with prepared_stack(options, keep_series=True) as prepared:
        target = prepared.targets["chat"]
        if options.warmup_s > 0:
            progress(f"warming up for {options.warmup_s:.0f} s")
            run_wrk(target, concurrency=concurrency, seconds=options.warmup_s)
        begin = prepared.sampler.sample().t_s
        progress(f"soak: chat at c={concurrency} for {minutes:g} min")
        meter = CpuMeter(prepared.sampler.pids)
        meter.start()
        result = run_wrk(target, concurrency=concurrency, seconds=minutes * 60)
        cpu = cpu_report(meter.stop(), result)
        samples = [s for s in prepared.sampler.series if s.t_s >= begin]
        samples.append(prepared.sampler.sample())
    memory = memory_report(samples)
    return {
        "kind": "soak",
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_version(),
        "options": {
            "users": options.users,
            "minutes": minutes,
            "warmup_s": options.warmup_s,
            "concurrency": concurrency,
            "log_level": options.log_level,
        },
        "result": result.as_dict(),
        "cpu_percent": cpu,
        "memory": memory,
        "flat": all(
            m["growth_mb_per_min"] < FLAT_MB_PER_MIN
            for name, m in memory.items()
            if name not in DATASTORES
        ),
    }


def soak_table(results: dict[str, Any]) -> str:
    result = results["result"]
    lines = [
        f"soak: {results['options']['minutes']:g} min of chat at"
        f" c={results['options']['concurrency']}: {result['requests']} requests,"
        f" {result['rps']:.1f} req/s, p99 {result['p99_ms']:.1f} ms, errors {result['errors']}",
        f"{'process':10} {'start MB':>9} {'end MB':>8} {'peak MB':>8} {'MB/min':>8} {'%CPU':>6}",
    ]
    for name, memory in results["memory"].items():
        lines.append(
            f"{name:10} {memory['start_mb']:>9.1f} {memory['end_mb']:>8.1f}"
            f" {memory['peak_mb']:>8.1f} {memory['growth_mb_per_min']:>8.3f}"
            f" {results['cpu_percent'].get(name, 0.0):>6.0f}"
        )
    verdict = "flat" if results["flat"] else f"NOT flat (>= {FLAT_MB_PER_MIN} MB/min somewhere)"
    verdict += f" (not counting the datastores: {', '.join(DATASTORES)})"
    lines.append(f"memory: {verdict}; errors: {result['errors']}")
    cpu = results["cpu_percent"]
    lines.append(
        f"machine {cpu['machine']:.0f} %CPU, of which outside the benchmark {cpu['outside']:.0f}"
    )
    return "\n".join(lines)
