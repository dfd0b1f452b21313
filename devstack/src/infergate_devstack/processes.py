"""One long-running child process: started in its own process group with its output appended to
a log file, waited on until ready, and stopped group-wide (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("devstack")

STOP_TIMEOUT_S = 10.0
_POLL_S = 0.05


class StartupError(RuntimeError):
    """A process exited or did not become ready in time."""


@dataclass(frozen=True)
class ProcessSpec:
    """What to run and how to tell it is ready. `ready` must be cheap and never raise."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    ready: Callable[[], bool]
    ready_timeout_s: float = 30.0
    cwd: Path | None = None
    # How long SIGTERM may take before SIGKILL: a service lets its requests in flight finish.
    stop_timeout_s: float = STOP_TIMEOUT_S


class ManagedProcess:
    """A child process that can be started, waited for, stopped and started again."""

    def __init__(self, spec: ProcessSpec, *, pid_dir: Path) -> None:
        self.spec = spec
        self._pid_file = pid_dir / f"{spec.name}.json"
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready."""
        if self.running():
            raise RuntimeError(f"{self.name} is already running")
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.spec.log_path.open("ab") as out:
            self._popen = subprocess.Popen(
                [*_parent_death_prefix(), *self.spec.argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(self.spec.env),
                cwd=self.spec.cwd,
                start_new_session=True,
            )
        self._pid_file.parent.mkdir(parents=True, exist_ok=True)
        self._pid_file.write_text(json.dumps({"pid": self._popen.pid, "argv": self.spec.argv[0]}))

    def wait_ready(self) -> None:
        """Poll `ready` until it answers True; fail fast if the process exits first."""
        deadline = time.monotonic() + self.spec.ready_timeout_s
        while True:
            if not self.running():
                code = self._popen.returncode if self._popen is not None else None
                raise StartupError(self._failure(f"exited with code {code} during startup"))
            if self.spec.ready():
                return
            if time.monotonic() > deadline:
                raise StartupError(
                    self._failure(f"not ready after {self.spec.ready_timeout_s:.0f} s")
                )
            time.sleep(_POLL_S)

    def exited(self) -> bool:
        """Started and then exited on its own (not stopped through this object)."""
        return self._popen is not None and self._popen.poll() is not None

    def stop(self, *, kill: bool = False, timeout_s: float | None = None) -> None:
        """SIGTERM the process group (SIGKILL if `kill`), escalate to SIGKILL after `timeout_s`
        (by default the spec's)."""
        self.send_stop(kill=kill)
        wait = self.spec.stop_timeout_s if timeout_s is None else timeout_s
        self.finish_stop(deadline=time.monotonic() + wait)

    def pause(self) -> None:
        """SIGSTOP the process group: it neither answers nor closes its connections (a hang)."""
        if self._popen is not None and self._popen.poll() is None:
            _signal_group(self._popen.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            _signal_group(self._popen.pid, signal.SIGCONT)

    def send_stop(self, *, kill: bool = False) -> None:
        if self._popen is not None and self._popen.poll() is None:
            _signal_group(self._popen.pid, signal.SIGKILL if kill else signal.SIGTERM)

    def finish_stop(self, *, deadline: float) -> None:
        """Wait for the leader to exit until `deadline`, then SIGKILL whatever is left."""
        popen = self._popen
        if popen is None:
            return
        try:
            popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("process_stop_timeout", name=self.name)
            _signal_group(popen.pid, signal.SIGKILL)
            popen.wait()
        # The leader is gone; make sure nothing it started outlives it. SIGKILL is delivered
        # asynchronously: wait (briefly) until the group's members are really gone.
        _signal_group(popen.pid, signal.SIGKILL)
        _wait_until_gone(popen.pid)
        self._pid_file.unlink(missing_ok=True)
        self._popen = None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.spec.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _failure(self, what: str) -> str:
        return (
            f"{self.name} {what}; last lines of {self.spec.log_path}:\n{self.tail()}"
            if self.tail()
            else f"{self.name} {what}; its log {self.spec.log_path} is empty"
        )


def stop_together(processes: Sequence[ManagedProcess], *, kill: bool = False) -> None:
    """Stop several processes at once: signal all, then wait for all within one timeout."""
    for process in processes:
        process.send_stop(kill=kill)
    started = time.monotonic()
    for process in processes:
        process.finish_stop(deadline=started + process.spec.stop_timeout_s)


def _wait_until_gone(pgid: int, *, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _parent_death_prefix() -> list[str]:
    """Have the kernel SIGTERM the child if this process dies without stopping it (crash, SIGKILL).

    Only from the main thread: the signal fires when the *thread* that forked exits."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "TERM", "--"]


def kill_leftovers(pid_dir: Path) -> list[str]:
    """Kill process groups recorded by an earlier stack on this data dir that is gone without
    stopping them. Returns their names. A recorded pid is only trusted while its command line
    still starts with the recorded program."""
    alive: dict[str, int] = {}
    for pid_file in sorted(pid_dir.glob("*.json")):
        record = json.loads(pid_file.read_text())
        pid, argv0 = int(record["pid"]), str(record["argv"])
        if cmdline_contains(pid, argv0):
            alive[pid_file.stem] = pid
            _signal_group(pid, signal.SIGTERM)
        pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(pid_alive(pid) for pid in alive.values()) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    for pid in alive.values():
        _signal_group(pid, signal.SIGKILL)
    for pid in alive.values():
        _wait_until_gone(pid)
    return sorted(alive)


def pid_alive(pid: int) -> bool:
    """True while `pid` is a process that has neither exited nor become a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def cmdline_contains(pid: int, word: str) -> bool:
    """True if an argument of process `pid` is `word` (False if there is no such process)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(word) in cmdline


def group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (to check that a stop left nothing behind)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members
