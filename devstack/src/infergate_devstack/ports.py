"""Loopback ports of the local stack: the documented defaults, free ones for tests, and the check
that a port is not already taken."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HOST = "127.0.0.1"


class PortInUseError(RuntimeError):
    """A port the stack needs is already taken by another process."""


@dataclass(frozen=True)
class Ports:
    """One port per component. Field names are the component names; `env_var` names the variable
    that changes each one for `python -m infergate_devstack run`."""

    nginx: int = 8080
    nginx_tls: int = 8443
    # The operator listener (operator console and /admin/), only when ADMIN_TOKEN is set.
    nginx_admin: int = 8090
    gateway: int = 4000
    auth: int = 4001
    usage: int = 4002
    ai: int = 4003
    redis: int = 6379
    mongo: int = 27017
    llm: int = 11434
    prometheus: int = 9090

    @classmethod
    def default(cls) -> Ports:
        return cls()

    @classmethod
    def free(cls) -> Ports:
        """Ports that are free on the loopback interface right now (for tests)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**dict(zip(names, free_ports(len(names)), strict=True)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ports:
        """The defaults, each overridden by its variable (`NGINX_PORT=8081`, ...)."""
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for name in cls.names():
            raw = env.get(env_var(name))
            if raw is not None:
                if not raw.isdigit() or not 0 < int(raw) < 65536:
                    raise ValueError(f"{env_var(name)}={raw!r} is not a port number")
                values[name] = int(raw)
        return cls(**values)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def of(self, name: str) -> int:
        value = getattr(self, name)
        assert isinstance(value, int)
        return value


def env_var(component: str) -> str:
    """The variable that sets a component's port: `nginx` -> `NGINX_PORT`."""
    return f"{component.upper()}_PORT"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the kernel hands out as free on 127.0.0.1."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def port_is_free(port: int) -> bool:
    """True if a server could listen on 127.0.0.1:`port` now.

    SO_REUSEADDR as the servers themselves set it, so a socket in TIME_WAIT does not count as
    taken but any listener (on 127.0.0.1 or 0.0.0.0) does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def ensure_free(ports: Iterable[tuple[str, int]]) -> None:
    """Raise PortInUseError naming every (component, port) pair that is taken."""
    taken = [(name, port) for name, port in ports if not port_is_free(port)]
    if taken:
        lines = [
            f"port {port} ({name}) on {HOST} is already in use; stop what is using it "
            f"or choose another port with {env_var(name.split('-')[0])}=<port>"
            for name, port in taken
        ]
        raise PortInUseError("\n".join(lines))
