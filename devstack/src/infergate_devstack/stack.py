"""The local stack: Redis, SecantusDB, an LLM, the four services, nginx and (with `observability`)
Prometheus as child processes on loopback ports. One code path for `python -m infergate_devstack
run` and for the tests:

    with Stack(StackConfig(data_dir=tmp, ports=Ports.free(), ollama_url=url)) as stack:
        httpx.get(stack.public_url + "/healthz")
"""

from __future__ import annotations

import atexit
import shutil
from collections.abc import Collection
from pathlib import Path
from types import TracebackType

from infergate_devstack import install
from infergate_devstack.components.datastores import REDIS_ADMIN_USER
from infergate_devstack.config import COMPONENTS, StackConfig
from infergate_devstack.plan import StackPlan
from infergate_devstack.ports import HOST, ensure_free
from infergate_devstack.processes import (
    ManagedProcess,
    ProcessSpec,
    kill_leftovers,
    stop_together,
)

__all__ = ["COMPONENTS", "Stack", "StackConfig"]


class Stack:
    """Starts the configured components (all, or `only` a subset of COMPONENTS) in dependency
    order, each ready before what needs it starts, and stops them in reverse order.
    As a context manager it stops everything on exit, exceptions included; an atexit hook and
    the children's parent-death signal cover a crash of the process that started them."""

    def __init__(self, config: StackConfig, *, only: Collection[str] | None = None) -> None:
        self.config = config
        self._plan = StackPlan(config, only=only)
        self._processes: dict[str, ManagedProcess] = {}
        self._stages: list[list[str]] = []

    def __enter__(self) -> Stack:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # -- lifecycle ---------------------------------------------------------------------------

    def up(self) -> None:
        """Start everything and wait until each is ready. On any failure, stop what started."""
        atexit.register(self.down)
        plan = self._plan
        try:
            self._prepare()
            llm_specs = self._llm_specs() if "llm" in plan.components else []
            self._start_stage([*plan.datastore_specs(), *llm_specs])
            self._start_stage(plan.service_specs({"auth", "usage", "ai"}))
            self._start_stage(plan.service_specs({"gateway"}))
            if "nginx" in plan.components:
                self._start_stage([plan.nginx_spec()])
            # Last: everything it scrapes is up, so its targets are `up` from the first scrape.
            if "prometheus" in plan.components:
                self._start_stage([plan.prometheus_spec()])
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Stop everything, last started first: SIGTERM, up to 10 s, then SIGKILL."""
        atexit.unregister(self.down)
        for stage in reversed(self._stages):
            stop_together([self._processes[name] for name in stage])
        self._stages.clear()
        self._processes.clear()

    def stop(self, name: str, *, kill: bool = False) -> None:
        """Stop one process (SIGTERM, or SIGKILL with `kill`), e.g. to test a dependency failing."""
        self.process(name).stop(kill=kill)

    def pause(self, name: str) -> None:
        """Freeze one process (SIGSTOP): it hangs without closing anything, until `resume`."""
        self.process(name).pause()

    def resume(self, name: str) -> None:
        self.process(name).resume()

    def start(self, name: str) -> None:
        """Start a stopped process again, on the same port, and wait until it is ready."""
        process = self.process(name)
        process.spawn()
        process.wait_ready()

    # -- where things are --------------------------------------------------------------------

    @property
    def components(self) -> frozenset[str]:
        return self._plan.components

    @property
    def public_url(self) -> str:
        """nginx, the way a user reaches the API."""
        return f"http://{HOST}:{self.config.ports.nginx}"

    @property
    def public_https_url(self) -> str:
        """nginx over TLS (trust `tls_ca`)."""
        return f"https://{HOST}:{self.config.ports.nginx_tls}"

    @property
    def prometheus_url(self) -> str:
        """Prometheus (runs with `StackConfig.observability`): its UI, /alerts and HTTP API."""
        return f"http://{HOST}:{self.config.ports.prometheus}"

    @property
    def tls_ca(self) -> Path:
        """The local certificate authority that signed nginx's certificate."""
        return self._plan.data_dir / "tls" / "ca.pem"

    def service_url(self, name: str) -> str:
        """Direct loopback URL of auth, usage, ai, gateway (auth-N, gateway-N, ... for replicas),
        llm, nginx."""
        if name == "llm":
            return self.llm_url
        if name == "nginx":
            return self.public_url
        return f"http://{HOST}:{self._plan.service_port(name)}"

    @property
    def internal_token(self) -> str:
        """The token the internal services require (header x-internal-token)."""
        return self._plan.internal_token

    @property
    def gateway_ports(self) -> list[int]:
        return list(self._plan.gateway_ports)

    @property
    def admin_enabled(self) -> bool:
        """Whether the gateways run the admin API (ADMIN_TOKEN set for them), and nginx the
        operator listener (`operator_url`)."""
        return self._plan.admin_enabled

    @property
    def console_url(self) -> str:
        """The web console for users (nginx's public listener)."""
        return f"{self.public_url}/"

    @property
    def operator_url(self) -> str:
        """nginx's operator listener (loopback only, with `admin_enabled`): the operator console
        at `/`, the admin API under /admin/."""
        return f"http://{HOST}:{self.config.ports.nginx_admin}"

    def replica_names(self, component: str) -> list[str]:
        """Every process of one service: `auth`, `auth-1`, ... (gateway, usage, ai alike)."""
        return self._plan.service_names({component})

    @property
    def mongo_uri(self) -> str:
        """The root user's URI (every database): for tests and operators."""
        return self._plan.mongo_users.root_uri(self.config.ports.mongo)

    def service_mongo_uri(self, service: str) -> str:
        """auth's or usage's own URI: a user who may read and write only its database."""
        return self._plan.mongo_users.service_uri(self.config.ports.mongo, service)

    @property
    def redis_port(self) -> int:
        return self.config.ports.redis

    @property
    def mongo_port(self) -> int:
        return self.config.ports.mongo

    @property
    def redis_url(self) -> str:
        """The admin user's URL (every key and command): for tests and operators."""
        password = self._plan.secrets.redis_admin_password
        return f"redis://{REDIS_ADMIN_USER}:{password}@{HOST}:{self.redis_port}/0"

    @property
    def llm_url(self) -> str:
        return self._plan.llm_url

    @property
    def llm_description(self) -> str:
        """ "Ollama at <url>", "embedded SmolLM2-135M (...)", or "external at <url>"."""
        llm = self._plan.llm
        return llm.description if llm is not None else f"external at {self.llm_url}"

    @property
    def data_dir(self) -> Path:
        return self._plan.data_dir

    @property
    def logs_dir(self) -> Path:
        return self._plan.logs_dir

    def log_path(self, name: str) -> Path:
        return self._plan.log_path(name)

    def process_names(self) -> list[str]:
        """Started processes, in start order."""
        return list(self._processes)

    def process(self, name: str) -> ManagedProcess:
        try:
            return self._processes[name]
        except KeyError:
            raise KeyError(f"no process {name!r}; started: {list(self._processes)}") from None

    def exited(self) -> list[str]:
        """Processes that exited on their own after they were started."""
        return [name for name, process in self._processes.items() if process.exited()]

    # -- internals ---------------------------------------------------------------------------

    def _prepare(self) -> None:
        plan = self._plan
        _keep_previous_logs(plan.logs_dir)
        plan.logs_dir.mkdir(parents=True, exist_ok=True)
        for name in kill_leftovers(plan.pid_dir):
            self.config.progress(f"stopped {name}, left running by an earlier stack")
        if self.config.install_missing:
            if plan.components & {"redis", "nginx", "prometheus"}:
                install.ensure_apt_programs(self.config.progress)
            if "mongo" in plan.components:
                install.ensure_secantus(self.config.progress)
        ensure_free(plan.ports_needed())

    def _llm_specs(self) -> list[ProcessSpec]:
        llm = self._plan.choose_llm()
        self.config.progress(f"LLM: {llm.description}")
        if llm.spec is None:
            return []
        ensure_free([("llm", self.config.ports.llm)])
        return [llm.spec]

    def _start_stage(self, specs: list[ProcessSpec]) -> None:
        """Spawn a group of independent processes together, then wait for each to be ready."""
        if not specs:
            return
        self._stages.append([spec.name for spec in specs])
        for spec in specs:
            self._processes[spec.name] = ManagedProcess(spec, pid_dir=self._plan.pid_dir)
            self._processes[spec.name].spawn()
        for spec in specs:
            self._processes[spec.name].wait_ready()


def _keep_previous_logs(logs_dir: Path) -> None:
    """Each run writes fresh logs; the previous run's move to `<logs>.previous` (the one before
    that is deleted), so logs never pile up across runs."""
    if not logs_dir.is_dir() or not any(logs_dir.iterdir()):
        return
    previous = logs_dir.with_name(logs_dir.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    logs_dir.rename(previous)
