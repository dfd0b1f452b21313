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

# The services that may run as several processes.
REPLICATED = ("auth", "usage", "ai", "gateway")


def replica_name(component: str, index: int) -> str:
    """Replica 0 is `gateway` (`auth`, ...), the others `gateway-1`, `gateway-2`, ..."""
    return component if index == 0 else f"{component}-{index}"


def gateway_name(index: int) -> str:
    return replica_name("gateway", index)


def component_of(name: str) -> str:
    """`gateway` of `gateway-1`, `nginx` of `nginx_tls` and `nginx_admin`."""
    return name.split("-")[0].split("_")[0]


class StackPlan:
    """The fixed facts of one stack (chosen once, kept across restarts of single processes)."""

    def __init__(self, config: StackConfig, *, only: Collection[str] | None) -> None:
        unknown = set(only or ()) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; known: {COMPONENTS}")
        for component in REPLICATED:
            if config.replica_count(component) < 1:
                raise ValueError(f"{component} needs at least one replica")
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
        self.mongo_users = MongoUsers.of(self.secrets)
        # Replica 0 of each service on its configured port, the others on free ones.
        # (One request for all of them: ports asked for separately may repeat.)
        extra = free_ports(sum(config.replica_count(c) - 1 for c in REPLICATED))
        self.replica_ports: dict[str, list[int]] = {}
        for component in REPLICATED:
            taken = config.replica_count(component) - 1
            self.replica_ports[component] = [config.ports.of(component), *extra[:taken]]
            del extra[:taken]
        self.llm: LlmChoice | None = None

    @property
    def gateway_ports(self) -> list[int]:
        return self.replica_ports["gateway"]

    @property
    def admin_enabled(self) -> bool:
        """Whether the gateways run the admin API (ADMIN_TOKEN set for them), and so nginx its
        operator listener."""
        return bool(self.config.env.get("ADMIN_TOKEN", os.environ.get("ADMIN_TOKEN", "")))

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
        """The port of auth, usage, ai, gateway or a replica (auth-1, gateway-2, ...)."""
        for index, port in enumerate(self.replica_ports.get(component_of(name), [])):
            if name == replica_name(component_of(name), index):
                return port
        raise KeyError(f"no service {name!r}")

    def ports_needed(self) -> list[tuple[str, int]]:
        """(name, port) of every selected component that listens, except the LLM (which needs
        its port only when no Ollama answers: checked once that is known)."""
        ports = self.config.ports
        needed = [(name, ports.of(name)) for name in ("redis", "mongo")]
        needed += [
            (replica_name(component, i), port)
            for component in REPLICATED
            for i, port in enumerate(self.replica_ports[component])
        ]
        needed += [("nginx", ports.nginx), ("nginx_tls", ports.nginx_tls)]
        if self.admin_enabled:
            needed += [("nginx_admin", ports.nginx_admin)]
        needed += [("prometheus", ports.prometheus)]
        return [(name, port) for name, port in needed if component_of(name) in self.components]

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
        """The selected services among `components`, every replica: auth, auth-1, ..., gateway,
        gateway-1, ..."""
        return [
            replica_name(component, i)
            for component in REPLICATED
            if component in components and component in self.components
            for i in range(len(self.replica_ports[component]))
        ]

    def service_specs(self, components: Collection[str]) -> list[ProcessSpec]:
        """Specs of the selected services among `components` (gateway: one per replica)."""
        wiring = self._wiring()
        return [
            service_spec(
                component_of(name),
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
            auth_ports=self.replica_ports["auth"],
            usage_ports=self.replica_ports["usage"],
            ai_ports=self.replica_ports["ai"],
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
            site_root=self.config.repo_root,  # console/ is served from the checkout
        )
        tls = ensure_certificate(self.data_dir / "tls")
        listeners = Listeners(
            http_port=self.config.ports.nginx,
            tls_port=self.config.ports.nginx_tls,
            certificate=tls.certificate,
            key=tls.key,
            admin_port=self.config.ports.nginx_admin if self.admin_enabled else None,
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
            ScrapeTarget(job=SERVICES[component_of(name)][1], port=self.service_port(name))
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
