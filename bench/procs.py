"""Memory and CPU of the stack's processes, read from /proc (each one with its children:
nginx workers, uvicorn workers)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

PROC = Path("/proc")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL_S = 0.5


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    found = [pid]
    for current in found:
        for task in (PROC / str(current) / "task").glob("*"):
            try:
                found.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def rss_kb(pid: int) -> int:
    """VmRSS of one process in kB (0 if it is gone)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (0 if it is gone)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    # After the command: state is field 3, utime 14 and stime 15 (1-based, see proc(5)).
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def machine_busy_seconds() -> float:
    """CPU time spent by everything on the machine (all cores), from /proc/stat."""
    fields = [int(v) for v in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields) - idle - iowait) / TICKS_PER_S


def tree_rss_kb(pid: int) -> int:
    return sum(rss_kb(p) for p in descendants(pid))


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in descendants(pid))


@dataclass
class CpuMeter:
    """%CPU of each named process tree between `start()` and `stop()` (100 % = one core), and
    of the whole machine (`machine`), so load from outside the benchmark shows."""

    pids: Mapping[str, int]
    _start_cpu: dict[str, float] = field(default_factory=dict)
    _start_wall: float = 0.0

    def _snapshot(self) -> dict[str, float]:
        cpu = {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}
        cpu["machine"] = machine_busy_seconds()
        return cpu

    def start(self) -> None:
        self._start_wall = time.monotonic()
        self._start_cpu = self._snapshot()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._start_wall
        end = self._snapshot()
        return {
            name: round((end[name] - self._start_cpu[name]) / wall * 100, 1)
            for name in self._start_cpu
        }


@dataclass
class RssSample:
    t_s: float
    rss_kb: dict[str, int]


class RssSampler:
    """Samples the RSS of each named process tree every 0.5 s in a thread; keeps the peaks and,
    with `keep_series`, every sample (for the soak)."""

    def __init__(self, pids: Mapping[str, int], *, keep_series: bool = False) -> None:
        self.pids = dict(pids)
        self.keep_series = keep_series
        self.peak_kb: dict[str, int] = dict.fromkeys(self.pids, 0)
        self.series: list[RssSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._t0 = time.monotonic()

    def sample(self) -> RssSample:
        current = {name: tree_rss_kb(pid) for name, pid in self.pids.items()}
        for name, kb in current.items():
            self.peak_kb[name] = max(self.peak_kb[name], kb)
        return RssSample(round(time.monotonic() - self._t0, 2), current)

    def _loop(self) -> None:
        while not self._stop.is_set():
            sample = self.sample()
            if self.keep_series:
                self.series.append(sample)
            self._stop.wait(SAMPLE_INTERVAL_S)

    def peak_mb(self) -> dict[str, float]:
        return {name: round(kb / 1024, 1) for name, kb in self.peak_kb.items()}

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
