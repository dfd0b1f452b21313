"""Turns a StackConfig into the processes to run: names, ports, paths, environments."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from infergate_devstack import install
from infergate_devstack.components.datastores import (
    MongoUsers,
    RedisUsers,
    mongo_spec,
    provision_mongo,
    redis_spec,
)
from infergate_devstack.components.edge import nginx_spec
from infergate_devstack.components.llm import LlmChoice, choose_llm
from infergate_devstack.components.observability import RULES_FILE, ScrapeTarget, prometheus_spec
from infergate_devstack.components.services import SERVICES, ServiceWiring, service_spec
from infergate_devstack.config import COMPONENTS, StackConfig
from infergate_devstack.nginx import Listeners, NginxLayout
from infergate_devstack.ports import HOST, free_ports
from infergate_devstack.processes import ProcessSpec
from infergate_devstack.stack_secrets import StackSecrets, load_or_create
from infergate_devstack.tls import ensure_certificate


def gateway_name(index: int) -> str:
    """Replica 0 is `gateway`, the others `gateway-1`, `gateway-2`, ..."""
    return "gateway" if index == 0 else f"gateway-{index}"


class StackPlan:
    """The fixed facts of one stack (chosen once, kept across restarts of single processes)."""

    def __init__(self, config: StackConfig, *, only: Collection[str] | None) -> None:
        unknown = set(only or ()) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; known: {COMPONENTS}")
        if config.gateway_replicas < 1:
            raise ValueError("gateway_replicas must be at least 1")
        self.config = config
        selected = frozenset(COMPONENTS if only is None else only)
        self.components = selected if config.observability else selected - {"prometheus"}
        self.data_dir = config.data_dir.resolve()
        self.secrets: StackSecrets = load_or_create(self.data_dir / "secrets.json")
        self.internal_token = (
            config.env.get("INTERNAL_TOKEN")
            or os.environ.get("INTERNAL_TOKEN")
            or self.secrets.internal_token
        )
        self.redis_users = RedisUsers(
            gateway_password=self.secrets.redis_gateway_password,
            admin_password=self.secrets.redis_admin_password,
        )
        self.mongo_users = MongoUsers(
            root_password=self.secrets.mongo_root_password,
            auth_password=self.secrets.mongo_auth_password,
            usage_password=self.secrets.mongo_usage_password,
        )
        extra = free_ports(config.gateway_replicas - 1) if config.gateway_replicas > 1 else []
        self.gateway_ports = [config.ports.gateway, *extra]
        self.llm: LlmChoice | None = None

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def pid_dir(self) -> Path:
        return self.data_dir / "pids"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    @property
    def llm_url(self) -> str:
        if self.llm is not None:
            return self.llm.url
        return (self.config.ollama_url or f"http://{HOST}:{self.config.ports.llm}").rstrip("/")

    def service_port(self, name: str) -> int:
        """The port of auth, usage, ai, gateway or gateway-N."""
        if name in ("auth", "usage", "ai"):
            return self.config.ports.of(name)
        for index, port in enumerate(self.gateway_ports):
            if name == gateway_name(index):
                return port
        raise KeyError(f"no service {name!r}")

    def ports_needed(self) -> list[tuple[str, int]]:
        """(name, port) of every selected component that listens, except the LLM (which needs
        its port only when no Ollama answers: checked once that is known)."""
        ports = self.config.ports
        needed = [(name, ports.of(name)) for name in ("redis", "mongo", "auth", "usage", "ai")]
        needed += [(gateway_name(i), port) for i, port in enumerate(self.gateway_ports)]
        needed += [("nginx", ports.nginx), ("nginx_tls", ports.nginx_tls)]
        needed += [("prometheus", ports.prometheus)]
        return [
            (name, port)
            for name, port in needed
            if name.split("-")[0].removesuffix("_tls") in self.components
        ]

    def datastore_specs(self) -> list[ProcessSpec]:
        specs = []
        if "redis" in self.components:
            specs.append(
                redis_spec(
                    program=install.require_program("redis-server"),
                    port=self.config.ports.redis,
                    data_dir=self.data_dir / "redis",
                    log_path=self.log_path("redis"),
                    users=self.redis_users,
                )
            )
        if "mongo" in self.components:
            provision_mongo(
                program=install.secantusd_program(),
                data_dir=self.data_dir / "mongo",
                users=self.mongo_users,
                log_path=self.log_path("mongo"),
            )
            specs.append(
                mongo_spec(
                    program=install.secantusd_program(),
                    port=self.config.ports.mongo,
                    data_dir=self.data_dir / "mongo",
                    log_path=self.log_path("mongo"),
                    users=self.mongo_users,
                )
            )
        return specs

    def choose_llm(self) -> LlmChoice:
        self.llm = choose_llm(
            ollama_url=self.config.ollama_url,
            port=self.config.ports.llm,
            repo_root=self.config.repo_root,
            log_path=self.log_path("llm"),
            progress=self.config.progress,
        )
        return self.llm

    def service_names(self, components: Collection[str]) -> list[str]:
        """The selected services among `components`: auth, usage, ai, gateway, gateway-1, ..."""
        names = [c for c in ("auth", "usage", "ai") if c in components]
        if "gateway" in components:
            names += [gateway_name(i) for i in range(len(self.gateway_ports))]
        return [name for name in names if name.split("-")[0] in self.components]

    def service_specs(self, components: Collection[str]) -> list[ProcessSpec]:
        """Specs of the selected services among `components` (gateway: one per replica)."""
        wiring = self._wiring()
        return [
            service_spec(
                name.split("-")[0],
                name=name,
                port=self.service_port(name),
                wiring=wiring,
                log_path=self.log_path(name),
                ready_timeout_s=self.config.ready_timeout_s,
            )
            for name in self.service_names(components)
        ]

    def _wiring(self) -> ServiceWiring:
        ports = self.config.ports
        return ServiceWiring(
            internal_token=self.internal_token,
            secrets=self.secrets,
            mongo_users=self.mongo_users,
            auth_port=ports.auth,
            usage_port=ports.usage,
            ai_port=ports.ai,
            redis_port=ports.redis,
            mongo_port=ports.mongo,
            llm_url=self.llm_url,
            overrides=self.config.env,
        )

    def nginx_spec(self) -> ProcessSpec:
        layout = NginxLayout(
            prefix=self.data_dir / "nginx",
            logs_dir=self.logs_dir,
            snippets_dir=self.config.repo_root / "nginx",
        )
        tls = ensure_certificate(self.data_dir / "tls")
        listeners = Listeners(
            http_port=self.config.ports.nginx,
            tls_port=self.config.ports.nginx_tls,
            certificate=tls.certificate,
            key=tls.key,
        )
        return nginx_spec(
            program=install.require_program("nginx"),
            layout=layout,
            listeners=listeners,
            gateway_ports=self.gateway_ports,
            settings={**os.environ, **self.config.env},
            log_path=self.log_path("nginx"),
        )

    def prometheus_spec(self) -> ProcessSpec:
        """Prometheus scraping every selected service process (each gateway replica)."""
        targets = [
            ScrapeTarget(job=SERVICES[name.split("-")[0]][1], port=self.service_port(name))
            for name in self.service_names(self.components)
        ]
        return prometheus_spec(
            program=install.require_program("prometheus"),
            port=self.config.ports.prometheus,
            data_dir=self.data_dir / "prometheus",
            rules_file=self.config.repo_root / RULES_FILE,
            targets=targets,
            log_path=self.log_path("prometheus"),
        )
