"""The local stack's nginx: a config rendered around the same shared routing files that the docker
compose nginx.conf includes (nginx/infergate-http.conf, nginx/infergate-routes.conf). Only the
listen address, the upstream servers and the paths differ."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infergate_devstack.ports import HOST

HTTP_SNIPPET = "infergate-http.conf"
ROUTES_SNIPPET = "infergate-routes.conf"
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class NginxConfigError(RuntimeError):
    """`nginx -t` rejected a configuration."""


@dataclass(frozen=True)
class NginxLayout:
    """Where the local nginx keeps its config, pid and temp files (its `-p` prefix)."""

    prefix: Path
    logs_dir: Path
    snippets_dir: Path

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"


def render_local_config(
    layout: NginxLayout, *, listen_port: int, gateway_ports: Sequence[int]
) -> str:
    """The nginx.conf of the local stack: loopback listener, one upstream server per replica."""
    servers = "\n".join(
        f"        server {HOST}:{port} max_fails=2 fail_timeout=5s;" for port in gateway_ports
    )
    temp_paths = "\n".join(
        f'    {name}_temp_path "{layout.prefix / "tmp" / name}";' for name in _TEMP_PATHS
    )
    # Workers of a root master would run as `nobody`, which cannot use temp dirs owned by root.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""# Rendered by infergate_devstack (local stack); edits are lost on the next start.
# The routing is in {layout.snippets_dir}/{ROUTES_SNIPPET}, shared with nginx/nginx.conf.
{user}worker_processes auto;
pid "{layout.prefix / "nginx.pid"}";
error_log stderr warn;

events {{
    worker_connections 1024;
}}

http {{
    include "{layout.snippets_dir / HTTP_SNIPPET}";

    access_log "{layout.logs_dir / "nginx-access.log"}" infergate_json;
{temp_paths}

    upstream gateway {{
{servers}
        # To the replica with the fewest requests in flight (round robin queues behind a busy one).
        least_conn;
        keepalive 64;
        # Below uvicorn's 5 s keep-alive: never reuse a connection the gateway is closing.
        keepalive_timeout 4s;
    }}

    server {{
        listen {HOST}:{listen_port};
        include "{layout.snippets_dir / ROUTES_SNIPPET}";
    }}
}}
"""


def write_local_config(
    layout: NginxLayout, *, listen_port: int, gateway_ports: Sequence[int]
) -> Path:
    """Render the config into the prefix and create the directories it names."""
    for name in _TEMP_PATHS:
        (layout.prefix / "tmp" / name).mkdir(parents=True, exist_ok=True)
    (layout.prefix / "logs").mkdir(parents=True, exist_ok=True)
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    text = render_local_config(layout, listen_port=listen_port, gateway_ports=gateway_ports)
    layout.conf.write_text(text)
    return layout.conf


def nginx_argv(nginx: Path, *, conf: Path, prefix: Path) -> list[str]:
    """nginx in the foreground (so it is our child), its startup errors on stderr (our log)."""
    return [str(nginx), "-p", str(prefix), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"]


def check_config(nginx: Path, *, conf: Path, prefix: Path, extra: str = "") -> None:
    """Run `nginx -t` on `conf`; raise NginxConfigError with nginx's message if it fails.

    `extra` is added with -g (for example a pid path, for configs that do not set one)."""
    argv = [str(nginx), "-t", "-q", "-p", str(prefix), "-c", str(conf), "-e", "stderr"]
    if extra:
        argv += ["-g", extra]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NginxConfigError(f"nginx -t failed for {conf}:\n{result.stderr.strip()}")
