"""The pidfile of a foreground `run`, so that `stop` (from another terminal) can find it and a
second `run` on the same data directory is refused."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from infergate_devstack.processes import cmdline_contains, pid_alive

_MARKER = "infergate_devstack"  # an argument of every `python -m infergate_devstack run`


class AlreadyRunningError(RuntimeError):
    """Another `run` is using this data directory."""


class RunFile:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "devstack.pid"

    def running_pid(self) -> int | None:
        """The pid of a live `run` recorded here, or None (a stale file is ignored)."""
        try:
            pid = int(self.path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) and cmdline_contains(pid, _MARKER) else None

    def claim(self) -> None:
        pid = self.running_pid()
        if pid is not None and pid != os.getpid():
            raise AlreadyRunningError(
                f"a stack is already running from {self.path.parent} (pid {pid}); "
                "stop it with `make stop`"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{os.getpid()}\n")

    def release(self) -> None:
        if self.running_pid() in (None, os.getpid()):
            self.path.unlink(missing_ok=True)

    def stop_running(self, *, timeout_s: float = 200.0) -> int | None:
        """SIGTERM the recorded `run` and wait until it has stopped its stack and exited (chats
        in flight are let finish: up to the gateway's chat deadline, 146 s by default)."""
        pid = self.running_pid()
        if pid is None:
            return None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"devstack run (pid {pid}) still running after {timeout_s} s")
            time.sleep(0.1)
        return pid
