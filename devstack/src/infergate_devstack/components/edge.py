"""nginx, the public entry point, proxying to the gateway replicas."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from infergate_devstack.nginx import NginxLayout, nginx_argv, write_local_config
from infergate_devstack.ports import HOST
from infergate_devstack.probes import http_answers
from infergate_devstack.processes import ProcessSpec


def nginx_spec(
    *,
    program: Path,
    layout: NginxLayout,
    port: int,
    gateway_ports: Sequence[int],
    log_path: Path,
) -> ProcessSpec:
    """Ready when nginx answers HTTP (the gateways are ready before nginx starts)."""
    conf = write_local_config(layout, listen_port=port, gateway_ports=gateway_ports)
    return ProcessSpec(
        name="nginx",
        argv=nginx_argv(program, conf=conf, prefix=layout.prefix),
        env=dict(os.environ),
        log_path=log_path,
        ready=functools.partial(http_answers, f"http://{HOST}:{port}/"),
    )
