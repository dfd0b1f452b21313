"""What was measured, and on what: the machine, how busy it already was, and the code version."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.procs import machine_busy_seconds

REPO_ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def machine_busy_percent(seconds: float = 2.0) -> float:
    """How busy the machine is before the benchmark starts (100 = one core)."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / seconds * 100


def _git(*args: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
    )
    return completed.stdout


def code_version() -> dict[str, Any]:
    """The commit measured, and the tracked paths that differed from it outside bench/: the
    services run from the work tree, so uncommitted changes are part of what was measured."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    changed = [line[3:] for line in status.splitlines() if not line[3:].startswith("bench/")]
    return {"commit": _git("rev-parse", "HEAD").strip(), "uncommitted_changes": changed}
