"""The peer: LiteLLM's proxy in front of the same test LLM, answering the same OpenAI request.

It runs as LiteLLM documents for a proxy without a database: a config file with one model
(`llama3` -> `ollama_chat/llama3` at the test LLM's URL), a master key that every request
carries, and `--num_workers N` uvicorn worker processes, on a free loopback port. It is started
in its own session so stopping it reaches every process it made (uvicorn's supervisor, the
workers, multiprocessing's resource tracker), also when the benchmark fails or is interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx
import yaml

from bench.stack import MODEL
from tests.fake_ollama_fixtures import free_port

# Scenario name -> uvicorn worker processes.
PEER_WORKERS = {"litellm": 1, "litellm-2": 2}
MASTER_KEY = "sk-infergate-bench-peer"  # loopback only, for the life of one run
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 240.0  # each worker imports LiteLLM: 15-35 s on 2 shared cores
STOP_TIMEOUT_S = 15.0
WORKER_HEALTHCHECK_TIMEOUT_S = 180
_READY_LINE = b"Application startup complete"


def litellm_config(*, llm_url: str, master_key: str) -> dict[str, Any]:
    """LiteLLM's proxy config: the bench's model at the test LLM (Ollama's chat API)."""
    return {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {"model": f"ollama_chat/{MODEL}", "api_base": llm_url},
            }
        ],
        "general_settings": {"master_key": master_key},
    }


def proxy_env(base: Mapping[str, str]) -> dict[str, str]:
    """`base` for LiteLLM: the cost map from the package (the machine may be offline), no
    database, and nothing of the workspace venv that launched the benchmark."""
    env = {name: value for name, value in base.items() if name not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.pop("DATABASE_URL", None)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return env


def proxy_command(python: Path, *, config: Path, port: int, workers: int) -> list[str]:
    command = [str(python), "-m", "litellm.proxy.proxy_cli", "--config", str(config)]
    command += ["--host", HOST, "--port", str(port), "--num_workers", str(workers)]
    if workers > 1:
        # uvicorn's supervisor kills a worker that does not answer its ping within 5 s, and a
        # spawned worker cannot answer while it imports LiteLLM (15-35 s here): without this,
        # it restarts them forever on a busy 2-core machine. Startup only; no effect on load.
        command += ["--timeout_worker_healthcheck", str(WORKER_HEALTHCHECK_TIMEOUT_S)]
    return command


class PeerError(RuntimeError):
    """LiteLLM's proxy did not start; the message names its log."""


class LiteLLMProxy:
    """LiteLLM's proxy with `workers` worker processes, from start to a full stop."""

    def __init__(self, python: Path, *, llm_url: str, directory: Path, workers: int) -> None:
        self.python = python
        self.llm_url = llm_url
        self.directory = directory
        self.workers = workers
        self.port = free_port(HOST)
        self.log_path = directory / "litellm.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise PeerError("LiteLLM's proxy is not running")
        return self.process.pid

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "litellm-config.yaml"
        settings = litellm_config(llm_url=self.llm_url, master_key=MASTER_KEY)
        config.write_text(yaml.safe_dump(settings, sort_keys=False))
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            proxy_command(self.python, config=config, port=self.port, workers=self.workers),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=proxy_env(os.environ),
            cwd=self.directory,
            start_new_session=True,  # its own process group: stop() signals every process
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Every worker has finished its startup (uvicorn logs it once per worker) and the
        proxy answers its liveness probe."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise PeerError(f"LiteLLM's proxy exited during startup{self._log_tail()}")
            if self.log_path.read_bytes().count(_READY_LINE) >= self.workers and self._live():
                return
            time.sleep(0.5)
        raise PeerError(f"LiteLLM's proxy not ready in {STARTUP_TIMEOUT_S:.0f} s{self._log_tail()}")

    def _log_tail(self, lines: int = 15) -> str:
        # The log is in the run's temporary directory unless --data-dir keeps it.
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"; the end of {self.log_path}:\n" + "\n".join(tail)

    def _live(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health/liveliness", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL to whatever is left after a grace."""
        if self.process is not None:
            group = self.process.pid  # the session leader's pid is the group's id
            _signal_group(group, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            _signal_group(group, signal.SIGKILL)  # workers that outlived their supervisor
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(group: int, signum: signal.Signals) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return  # every process of the group has already exited
