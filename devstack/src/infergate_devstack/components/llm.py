"""The LLM behind the ai-service: a running Ollama if one answers, else the embedded local model
(SmolLM2-135M through llama-cpp-python, served by local-llm/ with Ollama's API)."""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from infergate_devstack.ports import HOST
from infergate_devstack.probes import ollama_running
from infergate_devstack.processes import ProcessSpec, StartupError

EMBEDDED_MODEL = "SmolLM2-135M"
# Covers the server's imports and model load; compiling llama-cpp-python happens before the
# process starts, in ensure_llm_venv, with its own progress lines.
EMBEDDED_READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LlmChoice:
    """The URL the ai-service uses, a line for the summary, and the process to run (if any)."""

    url: str
    description: str
    spec: ProcessSpec | None


class LlmVenvModule(Protocol):
    """What the stack uses of infergate_devstack.llm_venv (the venv of the embedded model)."""

    def ensure_llm_venv(self, root: Path, *, progress: Callable[[str], None]) -> Path: ...
    def server_env(self, root: Path, base: Mapping[str, str]) -> dict[str, str]: ...
    def server_command(self, python: Path, *, host: str, port: int) -> list[str]: ...


def llm_venv() -> LlmVenvModule:
    """The venv builder, imported only when the embedded model is needed: a stack using Ollama
    or a test LLM runs (and type-checks) whether or not that module is there."""
    try:
        module = importlib.import_module("infergate_devstack.llm_venv")
    except ModuleNotFoundError as exc:
        raise StartupError(
            "the embedded LLM is not available (infergate_devstack.llm_venv is missing); "
            "set OLLAMA_URL to a running Ollama"
        ) from exc
    return cast(LlmVenvModule, module)


def choose_llm(
    *,
    ollama_url: str | None,
    port: int,
    repo_root: Path,
    log_path: Path,
    progress: Callable[[str], None],
) -> LlmChoice:
    """Use the Ollama at `ollama_url` when it answers; otherwise prepare the embedded model."""
    if ollama_url and ollama_running(ollama_url):
        url = ollama_url.rstrip("/")
        return LlmChoice(url=url, description=f"Ollama at {url}", spec=None)
    reason = f"no Ollama found at {ollama_url}" if ollama_url else "no OLLAMA_URL given"
    spec = embedded_spec(port=port, repo_root=repo_root, log_path=log_path, progress=progress)
    return LlmChoice(
        url=f"http://{HOST}:{port}",
        description=f"embedded {EMBEDDED_MODEL} (local, {reason})",
        spec=spec,
    )


def embedded_spec(
    *, port: int, repo_root: Path, log_path: Path, progress: Callable[[str], None]
) -> ProcessSpec:
    """The local-llm server run by the python of the llama-cpp-python venv (built on first use)."""
    venv = llm_venv()
    python = venv.ensure_llm_venv(repo_root, progress=progress)
    return ProcessSpec(
        name="llm",
        argv=venv.server_command(python, host=HOST, port=port),
        env=venv.server_env(repo_root, os.environ),
        log_path=log_path,
        ready=functools.partial(ollama_running, f"http://{HOST}:{port}"),
        ready_timeout_s=EMBEDDED_READY_TIMEOUT_S,
    )
