"""nginx, the public entry point, proxying to the gateway replicas."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from infergate_devstack.nginx import Listeners, NginxLayout, nginx_argv, write_local_config
from infergate_devstack.ports import HOST
from infergate_devstack.probes import http_answers
from infergate_devstack.processes import ProcessSpec


def nginx_spec(
    *,
    program: Path,
    layout: NginxLayout,
    listeners: Listeners,
    gateway_ports: Sequence[int],
    settings: Mapping[str, str],
    log_path: Path,
) -> ProcessSpec:
    """Ready when nginx answers HTTP (the gateways are ready before nginx starts)."""
    conf = write_local_config(
        layout, listeners=listeners, gateway_ports=gateway_ports, settings=settings
    )
    port = listeners.http_port
    return ProcessSpec(
        name="nginx",
        argv=nginx_argv(program, conf=conf, prefix=layout.prefix),
        env=dict(os.environ),
        log_path=log_path,
        ready=functools.partial(http_answers, f"http://{HOST}:{port}/"),
    )
