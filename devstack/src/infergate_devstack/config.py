"""What a local stack runs and where: the configuration shared by the CLI and the tests."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infergate_devstack.ports import Ports

# In start order. A Stack may run a subset (`only=`).
# "prometheus" runs only with `StackConfig.observability` (the CLI's default, off for tests).
COMPONENTS = ("redis", "mongo", "llm", "auth", "usage", "ai", "gateway", "nginx", "prometheus")


def find_repo_root() -> Path:
    """The checkout this package runs from (devstack/src/infergate_devstack/ is three levels in)."""
    return Path(__file__).resolve().parents[3]


def print_progress(line: str) -> None:
    print(f"devstack: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class StackConfig:
    """`env` is applied last to every service's environment (after the inherited one and the
    stack's own settings). `ollama_url`: an Ollama to use if it answers, else the embedded model
    runs on `ports.llm`. `observability`: also run Prometheus on `ports.prometheus`, scraping every
    service (off by default: the tests' stacks start faster without it)."""

    data_dir: Path
    ports: Ports = field(default_factory=Ports.default)
    ollama_url: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    gateway_replicas: int = 1
    # Processes per service ("auth", "usage", "ai", "gateway"); the gateway's count defaults to
    # `gateway_replicas`, the others' to 1.
    replicas: Mapping[str, int] = field(default_factory=dict)
    observability: bool = False
    ready_timeout_s: float = 30.0
    install_missing: bool = True
    repo_root: Path = field(default_factory=find_repo_root)
    progress: Callable[[str], None] = print_progress

    def replica_count(self, component: str) -> int:
        default = self.gateway_replicas if component == "gateway" else 1
        return self.replicas.get(component, default)
