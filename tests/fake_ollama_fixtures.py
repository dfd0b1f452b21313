"""The fake Ollama server as a subprocess, plus a client for its control API.

Use the helpers directly (benchmarks, devstack) or register the fixtures from a conftest with
``pytest_plugins = ["tests.fake_ollama_fixtures"]``:

* ``fake_ollama`` (session): a running `FakeOllamaProcess` on a free port; ``.url`` is its base URL.
* ``fake_ollama_control`` (function): its `FakeOllamaControl`, reset before and after each test.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.started import Started

FAKE_OLLAMA_SCRIPT = Path(__file__).with_name("fake_ollama.py")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class FakeOllamaProcess(Started):
    """`python tests/fake_ollama.py` in a child process, ready once `GET /` answers."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int | None = None, args: Sequence[str] = ()
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, timeout_s: float = 15.0) -> None:
        command = [sys.executable, str(FAKE_OLLAMA_SCRIPT), "--host", self.host]
        command += ["--port", str(self.port), *self.args]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"fake ollama exited with {self.process.returncode}: {stderr}")
            try:
                if httpx.get(self.url, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fake ollama did not answer on {self.url} within {timeout_s}s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


class FakeOllamaControl:
    """The `/_control` API: change behaviour, reset, read counters."""

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self._client = client

    async def configure(self, **changes: Any) -> dict[str, Any]:
        return await self._post("/_control/config", changes)

    async def reset(self) -> dict[str, Any]:
        return await self._post("/_control/reset", {})

    async def stats(self) -> dict[str, Any]:
        response = await self._client.get(f"{self.url}/_control/stats")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._client.post(f"{self.url}{path}", json=body)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture(scope="session")
def fake_ollama() -> Iterator[FakeOllamaProcess]:
    with FakeOllamaProcess() as server:
        yield server


@pytest.fixture
async def fake_ollama_control(
    fake_ollama: FakeOllamaProcess,
) -> AsyncIterator[FakeOllamaControl]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        control = FakeOllamaControl(fake_ollama.url, client)
        await control.reset()
        yield control
        await control.reset()
