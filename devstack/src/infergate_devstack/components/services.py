"""The four InferGate services, each `python -m <package>` with its settings in the environment."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infergate_devstack.components.datastores import REDIS_GATEWAY_USER, MongoUsers
from infergate_devstack.ports import HOST
from infergate_devstack.probes import http_ok
from infergate_devstack.processes import STOP_TIMEOUT_S, ProcessSpec
from infergate_devstack.stack_secrets import StackSecrets

# component name -> (python package, SERVICE_NAME)
SERVICES: Mapping[str, tuple[str, str]] = {
    "auth": ("auth_service", "auth-service"),
    "usage": ("usage_service", "usage-service"),
    "ai": ("ai_service", "ai-service"),
    "gateway": ("api_gateway", "api-gateway"),
}


# A stopping gateway lets its chats in flight finish and settle (up to its chat deadline, 140 s
# with the default timeouts), ai-service its model calls (OLLAMA_TIMEOUT + 10 s). Only a process
# that hangs waits this long: the others exit as soon as their last request is answered.
_STOP_TIMEOUT_S = {"gateway": 160.0, "ai": 140.0, "auth": 40.0, "usage": 40.0}


@dataclass(frozen=True)
class ServiceWiring:
    """Where every service finds the others: what the environment of each is built from."""

    internal_token: str
    secrets: StackSecrets
    mongo_users: MongoUsers
    auth_ports: Sequence[int]  # every replica's
    usage_ports: Sequence[int]
    ai_ports: Sequence[int]
    redis_port: int
    mongo_port: int
    llm_url: str
    overrides: Mapping[str, str]


def service_env(component: str, *, port: int, wiring: ServiceWiring) -> dict[str, str]:
    """The inherited environment, then this service's settings, then the stack's overrides."""
    env = dict(os.environ)
    env.setdefault("LOG_LEVEL", "info")
    env.update(
        SERVICE_NAME=SERVICES[component][1],
        PORT=str(port),
        HOST=HOST,
        LOG_FORMAT="json",
        # Log lines reach the log file as they are written, even from print().
        PYTHONUNBUFFERED="1",
        INTERNAL_TOKEN=wiring.internal_token,
    )
    env.update(_own_settings(component, wiring))
    if component == "ai":
        env.setdefault("MODEL", "llama3")
    env.update(wiring.overrides)
    return env


def _own_settings(component: str, wiring: ServiceWiring) -> dict[str, str]:
    if component == "auth":
        return {
            "MONGO_URI": wiring.mongo_users.service_uri(wiring.mongo_port, "auth"),
            "KEY_DERIVATION_SECRET": wiring.secrets.key_derivation_secret,
        }
    if component == "usage":
        return {"MONGO_URI": wiring.mongo_users.service_uri(wiring.mongo_port, "usage")}
    if component == "ai":
        return {"OLLAMA_URL": wiring.llm_url}
    return {
        # Every replica, comma-separated: the gateway balances them.
        "AUTH_SERVICE_URL": _urls(wiring.auth_ports),
        "USAGE_SERVICE_URL": _urls(wiring.usage_ports),
        "AI_SERVICE_URL": _urls(wiring.ai_ports),
        "REDIS_HOST": HOST,
        "REDIS_PORT": str(wiring.redis_port),
        "REDIS_USERNAME": REDIS_GATEWAY_USER,
        "REDIS_PASSWORD": wiring.secrets.redis_gateway_password,
    }


def _urls(ports: Sequence[int]) -> str:
    return ",".join(f"http://{HOST}:{port}" for port in ports)


def service_spec(
    component: str,
    *,
    name: str,
    port: int,
    wiring: ServiceWiring,
    log_path: Path,
    ready_timeout_s: float,
) -> ProcessSpec:
    """`name` differs from `component` for replicas (gateway-1, auth-2, ...)."""
    return ProcessSpec(
        name=name,
        argv=[sys.executable, "-m", SERVICES[component][0]],
        env=service_env(component, port=port, wiring=wiring),
        log_path=log_path,
        ready=functools.partial(http_ok, f"http://{HOST}:{port}/healthz"),
        ready_timeout_s=ready_timeout_s,
        stop_timeout_s=_STOP_TIMEOUT_S.get(component, STOP_TIMEOUT_S),
    )
