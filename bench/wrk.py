"""Running wrk with bench/load.lua and reading the JSON line its done() prints."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOAD_SCRIPT = Path(__file__).with_name("load.lua")
RESULT_MARKER = "BENCH_RESULT "
# Beyond wrk's default of 2 s, so a slow answer counts as latency rather than vanishing.
REQUEST_TIMEOUT = "10s"


class WrkError(RuntimeError):
    """wrk failed or printed no result line."""


@dataclass(frozen=True)
class Target:
    """One kind of request: where to send it, how, and with which keys (None: no key) in which
    header ("authorization" sends each as "Bearer <key>"). `unique`: every "__N__" of the body
    becomes a number no other request sends (load.lua), so no two requests are the same."""

    name: str
    url: str
    method: str
    body_file: Path | None
    keys_file: Path | None
    key_header: str = "x-api-key"
    unique: bool = False


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    socket_errors: dict[str, int]
    statuses: dict[str, int]
    wrk_cpu_s: float
    # Answers by their x-infergate-cache header (hit, miss); empty when none had it.
    cache: dict[str, int] = field(default_factory=dict)

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    @property
    def errors(self) -> int:
        """Every request that did not get a 2xx answer (socket errors, timeouts, statuses)."""
        socket_errors = sum(n for kind, n in self.socket_errors.items() if kind != "status")
        return socket_errors + self.non_2xx

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors, "non_2xx": self.non_2xx}


def wrk_program() -> str:
    program = shutil.which("wrk")
    if program is None:
        raise WrkError("wrk is not installed: apt-get install -y wrk")
    return program


def unique_base() -> int:
    """Where a run's unique numbers start: microseconds now. A run sends far fewer than a
    million requests a second, so the next run starts past the last number of this one (and
    under 2**53, exact in LuaJIT's numbers)."""
    return time.time_ns() // 1000


def wrk_argv(target: Target, *, concurrency: int, seconds: float) -> list[str]:
    threads = min(concurrency, 2)
    unique = [str(unique_base())] if target.unique else []
    return [
        wrk_program(),
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={REQUEST_TIMEOUT}",
        "-s",
        str(LOAD_SCRIPT),
        target.url,
        "--",
        target.method,
        str(target.body_file) if target.body_file else "-",
        str(target.keys_file) if target.keys_file else "-",
        str(threads),
        target.key_header,
        *unique,
    ]


def run_wrk(target: Target, *, concurrency: int, seconds: float) -> WrkResult:
    """One wrk run; its own CPU time comes from the rusage of waited-for children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(
        wrk_argv(target, concurrency=concurrency, seconds=seconds),
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 60,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise WrkError(f"wrk exited with {completed.returncode}: {completed.stderr.strip()}")
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return parse_output(completed.stdout, wrk_cpu_s=cpu_s)


def parse_output(stdout: str, *, wrk_cpu_s: float = 0.0) -> WrkResult:
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        raise WrkError(f"wrk printed no {RESULT_MARKER.strip()} line:\n{stdout}")
    raw: dict[str, Any] = json.loads(lines[-1][len(RESULT_MARKER) :])
    latency = raw["latency_us"]
    duration_s = raw["duration_us"] / 1e6
    return WrkResult(
        requests=int(raw["requests"]),
        duration_s=round(duration_s, 3),
        rps=round(raw["requests"] / duration_s, 1) if duration_s else 0.0,
        p50_ms=latency["p50"] / 1000,
        p95_ms=latency["p95"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        mean_ms=round(latency["mean"] / 1000, 3),
        socket_errors={kind: int(n) for kind, n in raw["errors"].items()},
        statuses={status: int(n) for status, n in raw["statuses"].items()},
        wrk_cpu_s=round(wrk_cpu_s, 2),
        cache={value: int(n) for value, n in raw.get("cache", {}).items()},
    )
