"""Runs the real local LLM server (its own venv, the real model) once for the whole session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import ollama
import pytest
from infergate_devstack.llm_venv import ensure_llm_venv, llm_venv_dir, server_command, server_env

REPO_ROOT = Path(__file__).resolve().parents[2]
# Small enough that capped generations stay short, large enough for a visible disconnect.
SERVER_MAX_TOKENS = 384
START_TIMEOUT_S = 60.0
# A first run on a machine compiles llama.cpp (3-4 min on 2 cores) in the session fixture.
BUILD_TIMEOUT_S = 900


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pytest-timeout counts fixture set-up against whichever test comes first, so only when the
    # venv still has to be built do this directory's tests get the build's time as well.
    if (llm_venv_dir(REPO_ROOT) / "bin" / "python").exists():
        return
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _progress(message: str) -> None:
    # Straight to the terminal: pytest captures fixture output, and a first build takes minutes.
    print(f"[local-llm] {message}", file=sys.__stderr__, flush=True)


def _wait_until_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(encoding="utf-8")
            raise RuntimeError(f"the local LLM server exited ({process.returncode}):\n{log}")
        try:
            if httpx.get(f"{base_url}/", timeout=1.0).text == "Ollama is running":
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise RuntimeError(f"the local LLM server did not answer within {START_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def local_llm_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's output: JSON log lines (generation events are asserted on)."""
    return tmp_path_factory.mktemp("local-llm") / "server.log"


@pytest.fixture(scope="session")
def local_llm(local_llm_log: Path) -> Iterator[str]:
    """The base URL of a running server (the server's cap: LOCAL_LLM_MAX_TOKENS below)."""
    python = ensure_llm_venv(REPO_ROOT, progress=_progress)
    port = _free_port()
    log_path = local_llm_log
    env = server_env(REPO_ROOT, os.environ) | {
        "LOCAL_LLM_ALIASES": "llama3,tiny",
        "LOCAL_LLM_MAX_TOKENS": str(SERVER_MAX_TOKENS),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "debug",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(python, host="127.0.0.1", port=port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(base_url, process, log_path)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def client(local_llm: str) -> AsyncIterator[ollama.AsyncClient]:
    """The unmodified ollama client, as the ai-service uses it."""
    async with ollama.AsyncClient(host=local_llm) as async_client:
        yield async_client
