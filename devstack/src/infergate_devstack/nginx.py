"""The local stack's nginx: a config rendered around the same shared files that the docker compose
nginx.conf includes (nginx/infergate-*.conf). Only the listen addresses, the upstream servers and
the paths differ. With an operator port it also renders the operator listener (the operator
console and /admin/), on loopback like everything else in the local stack."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infergate_devstack.ports import HOST

HTTP_SNIPPET = "infergate-http.conf"
ROUTES_SNIPPET = "infergate-routes.conf"
TLS_SNIPPET = "infergate-tls.conf"
ERRORS_SNIPPET = "infergate-errors.conf"
CONSOLE_SNIPPET = "infergate-console.conf"
OPERATOR_SNIPPET = "infergate-operator.conf"
LIMITS_TEMPLATE = "infergate-limits.conf.template"
# The per-client limits' variables and their defaults (compose sets the same defaults).
LIMIT_DEFAULTS = {
    "NGINX_REQUESTS_PER_SECOND": "50",
    "NGINX_REQUEST_BURST": "100",
    "NGINX_CONNECTIONS_PER_CLIENT": "100",
}
_LIMIT_MAX = 65_535  # nginx's own bound on limit_conn
# For load from one address (benchmarks, test suites): limits nothing reaches.
UNLIMITED_EDGE = {
    "NGINX_REQUESTS_PER_SECOND": "60000",
    "NGINX_REQUEST_BURST": "60000",
    "NGINX_CONNECTIONS_PER_CLIENT": "60000",
}
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class NginxConfigError(RuntimeError):
    """`nginx -t` rejected a configuration."""


@dataclass(frozen=True)
class NginxLayout:
    """Where the local nginx keeps its config, pid and temp files (its `-p` prefix), where the
    shared config files are, and `site_root`: the directory holding console/ (the repository)."""

    prefix: Path
    logs_dir: Path
    snippets_dir: Path
    site_root: Path

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def limits(self) -> Path:
        return self.prefix / "infergate-limits.conf"


@dataclass(frozen=True)
class Listeners:
    """Where the local nginx listens (loopback): plain HTTP, and HTTPS with a certificate; the
    operator listener on `admin_port` (None: not rendered)."""

    http_port: int
    tls_port: int
    certificate: Path
    key: Path
    admin_port: int | None = None


def render_limits(template: str, settings: Mapping[str, str]) -> str:
    """The limits file: each NGINX_* variable from `settings`, else its default."""
    text = template
    for name, default in LIMIT_DEFAULTS.items():
        value = settings.get(name, default)
        if not value.isdigit() or not 1 <= int(value) <= _LIMIT_MAX:
            raise ValueError(f"{name}={value!r} must be a whole number from 1 to {_LIMIT_MAX}")
        text = text.replace("${" + name + "}", value)
    return text


def render_local_config(
    layout: NginxLayout, *, listeners: Listeners, gateway_ports: Sequence[int]
) -> str:
    """The nginx.conf of the local stack: loopback listeners, one upstream per replica."""
    servers = "\n".join(
        f"        server {HOST}:{port} max_fails=2 fail_timeout=5s;" for port in gateway_ports
    )
    temp_paths = "\n".join(
        f'    {name}_temp_path "{layout.prefix / "tmp" / name}";' for name in _TEMP_PATHS
    )
    snippets = layout.snippets_dir
    # Workers of a root master would run as `nobody`, which cannot use temp dirs owned by root.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""# Rendered by infergate_devstack (local stack); edits are lost on the next start.
# The routing is in {snippets}/{ROUTES_SNIPPET}, shared with nginx/nginx.conf.
{user}worker_processes auto;
worker_rlimit_nofile 16384;
pid "{layout.prefix / "nginx.pid"}";
error_log stderr warn;

events {{
    worker_connections 8192;
}}

http {{
    include "{snippets / HTTP_SNIPPET}";
    include "{layout.limits}";

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
        listen {HOST}:{listeners.http_port};
        listen {HOST}:{listeners.tls_port} ssl http2;
        ssl_certificate "{listeners.certificate}";
        ssl_certificate_key "{listeners.key}";
        include "{snippets / TLS_SNIPPET}";
        root "{layout.site_root}";
        include "{snippets / ERRORS_SNIPPET}";
        include "{snippets / ROUTES_SNIPPET}";
        include "{snippets / CONSOLE_SNIPPET}";
    }}
{_operator_server(layout, listeners)}}}
"""


def _operator_server(layout: NginxLayout, listeners: Listeners) -> str:
    """The operator listener (console and /admin/), or nothing without an operator port."""
    if listeners.admin_port is None:
        return ""
    snippets = layout.snippets_dir
    return f"""
    # The operator console and the admin API: loopback only, never the public listener.
    server {{
        listen {HOST}:{listeners.admin_port};
        root "{layout.site_root}";
        include "{snippets / ERRORS_SNIPPET}";
        include "{snippets / CONSOLE_SNIPPET}";
        include "{snippets / OPERATOR_SNIPPET}";
    }}
"""


def write_local_config(
    layout: NginxLayout,
    *,
    listeners: Listeners,
    gateway_ports: Sequence[int],
    settings: Mapping[str, str],
) -> Path:
    """Render the config (and the limits file, from `settings`) into the prefix, and create the
    directories it names."""
    for name in _TEMP_PATHS:
        (layout.prefix / "tmp" / name).mkdir(parents=True, exist_ok=True)
    (layout.prefix / "logs").mkdir(parents=True, exist_ok=True)
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    template = (layout.snippets_dir / LIMITS_TEMPLATE).read_text()
    layout.limits.write_text(render_limits(template, settings))
    text = render_local_config(layout, listeners=listeners, gateway_ports=gateway_ports)
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
