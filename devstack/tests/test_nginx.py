"""nginx: both configs pass `nginx -t`, the local one answers its own errors in JSON, serves the
web console with its security headers, and the operator console only on the operator listener."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from infergate_devstack.config import StackConfig, find_repo_root
from infergate_devstack.install import require_program
from infergate_devstack.nginx import (
    LIMITS_TEMPLATE,
    Listeners,
    NginxLayout,
    check_config,
    render_limits,
    write_local_config,
)
from infergate_devstack.ports import Ports
from infergate_devstack.stack import Stack
from infergate_devstack.tls import ensure_certificate

REPO = find_repo_root()
NGINX_DIR = REPO / "nginx"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def _layout(tmp_path: Path) -> NginxLayout:
    return NginxLayout(
        prefix=tmp_path / "nginx",
        logs_dir=tmp_path / "logs",
        snippets_dir=NGINX_DIR,
        site_root=REPO,
    )


def test_the_local_config_passes_nginx_t(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    tls = ensure_certificate(tmp_path / "tls")
    listeners = Listeners(http_port=18080, tls_port=18443, certificate=tls.certificate, key=tls.key)
    conf = write_local_config(
        layout, listeners=listeners, gateway_ports=[14000, 14001], settings={}
    )

    check_config(require_program("nginx"), conf=conf, prefix=layout.prefix)

    text = conf.read_text()
    assert "listen 127.0.0.1:18080;" in text
    assert "listen 127.0.0.1:18443 ssl http2;" in text
    assert text.count("max_fails=") == 2
    assert str(NGINX_DIR / "infergate-routes.conf") in text
    assert f'root "{REPO}";' in text
    assert "infergate-operator.conf" not in text  # no operator port: no operator listener
    limits = layout.limits.read_text()
    assert "rate=50r/s" in limits
    assert "limit_conn infergate_per_client 100;" in limits


def test_the_operator_listener_is_rendered_on_loopback_with_an_operator_port(
    tmp_path: Path,
) -> None:
    layout = _layout(tmp_path)
    tls = ensure_certificate(tmp_path / "tls")
    listeners = Listeners(
        http_port=18080, tls_port=18443, certificate=tls.certificate, key=tls.key, admin_port=18090
    )
    conf = write_local_config(layout, listeners=listeners, gateway_ports=[14000], settings={})

    check_config(require_program("nginx"), conf=conf, prefix=layout.prefix)

    operator = conf.read_text().split("listen 127.0.0.1:18090;")[1]
    assert str(NGINX_DIR / "infergate-operator.conf") in operator
    assert str(NGINX_DIR / "infergate-routes.conf") not in operator


def test_the_limits_come_from_the_nginx_variables_and_refuse_nonsense() -> None:
    template = (NGINX_DIR / LIMITS_TEMPLATE).read_text()
    rendered = render_limits(template, {"NGINX_REQUESTS_PER_SECOND": "7"})
    assert "rate=7r/s" in rendered
    assert "burst=100 " in rendered
    with pytest.raises(ValueError, match="NGINX_REQUEST_BURST"):
        render_limits(template, {"NGINX_REQUEST_BURST": "0"})


def test_the_compose_config_passes_nginx_t(tmp_path: Path) -> None:
    """The compose file with `gateway` pointed at loopback (no Docker DNS here), its limits
    rendered as the image's template step does, and a certificate where it mounts one."""
    for source in NGINX_DIR.glob("*.conf"):
        shutil.copy(source, tmp_path / source.name)
    template = (NGINX_DIR / LIMITS_TEMPLATE).read_text()
    (tmp_path / "infergate-limits.conf").write_text(render_limits(template, {}))
    tls = ensure_certificate(tmp_path / "certs")
    conf = tmp_path / "nginx.conf"
    text = conf.read_text()
    for include in ("http", "limits", "tls", "routes"):
        assert f"include infergate-{include}.conf;" in text
    text = text.replace("server gateway:4000", "server 127.0.0.1:4000")
    text = text.replace("/etc/nginx/certs/server.pem", str(tls.certificate))
    conf.write_text(text.replace("/etc/nginx/certs/server.key", str(tls.key)))

    check_config(
        require_program("nginx"), conf=conf, prefix=tmp_path, extra=f"pid {tmp_path}/nginx.pid;"
    )


@pytest.fixture(scope="module")
def edge_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """nginx alone (with its operator listener): every path it proxies finds no gateway."""
    config = StackConfig(
        data_dir=tmp_path_factory.mktemp("edge"),
        ports=Ports.free(),
        env={"ADMIN_TOKEN": "edge-admin-token-0123456789"},
    )
    with Stack(config, only={"nginx"}) as stack:
        yield stack


@pytest.fixture(scope="module")
def edge(edge_stack: Stack) -> str:
    return edge_stack.public_url


def test_unknown_paths_get_a_json_404_from_nginx(edge: str) -> None:
    response = httpx.get(f"{edge}/admin", headers={"x-request-id": "trace-1"})

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"message": "Not found", "code": "not_found", "requestId": "trace-1"}
    assert response.headers["x-request-id"] == "trace-1"


def test_an_unsafe_request_id_is_replaced(edge: str) -> None:
    response = httpx.get(f"{edge}/admin", headers={"x-request-id": 'x"},"evil":"1'})

    body = response.json()
    assert set(body) == {"message", "code", "requestId"}
    assert body["requestId"] != 'x"},"evil":"1'
    assert len(body["requestId"]) == 32


def test_a_missing_gateway_is_a_json_502(edge: str) -> None:
    response = httpx.get(f"{edge}/healthz")

    assert response.status_code == 502
    assert response.json()["code"] == "upstream_unavailable"


def test_a_body_over_1m_is_a_json_413(edge: str) -> None:
    response = httpx.post(f"{edge}/v1/register", content=b"x" * (1024 * 1024 + 1))

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_nginx_hides_its_version(edge: str) -> None:
    assert httpx.get(f"{edge}/admin").headers["server"] == "nginx"


def _assert_console_headers(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_console_page_is_served_at_exactly_the_root(edge: str) -> None:
    response = httpx.get(f"{edge}/")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text == (REPO / "console" / "index.html").read_text()
    assert response.headers["cache-control"] == "no-cache"
    _assert_console_headers(response)


def test_console_assets_have_their_types_and_cache_headers(edge: str) -> None:
    css = httpx.get(f"{edge}/console/css/console.css")
    script = httpx.get(f"{edge}/console/js/user.js")
    vendored = httpx.get(f"{edge}/console/vendor/uplot-1.6.32/uPlot.iife.min.js")
    revalidated = httpx.get(
        f"{edge}/console/js/user.js", headers={"if-none-match": script.headers["etag"]}
    )

    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert vendored.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["cache-control"] == "no-cache"
    assert vendored.headers["cache-control"] == "max-age=31536000"
    assert revalidated.status_code == 304
    for response in (css, script, vendored):
        assert response.status_code == 200
        _assert_console_headers(response)


@pytest.mark.parametrize(
    "path", ["/console/operator/index.html", "/console/nothing.js", "/index.html", "/v2/usage"]
)
def test_the_public_listener_has_no_operator_console_and_unknown_paths_stay_json_404s(
    edge: str, path: str
) -> None:
    response = httpx.get(f"{edge}{path}")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_the_operator_listener_serves_the_operator_console_and_proxies_admin(
    edge_stack: Stack,
) -> None:
    page = httpx.get(f"{edge_stack.operator_url}/")
    admin = httpx.get(f"{edge_stack.operator_url}/admin/users")
    public_admin = httpx.get(f"{edge_stack.public_url}/admin/users")
    public_api = httpx.get(f"{edge_stack.operator_url}/v1/usage")

    assert page.status_code == 200
    assert page.text == (REPO / "console" / "operator" / "index.html").read_text()
    _assert_console_headers(page)
    # Proxied: no gateway runs in this stack, so nginx answers its JSON 502.
    assert admin.status_code == 502
    assert admin.json()["code"] == "upstream_unavailable"
    assert public_admin.status_code == 404
    assert public_api.status_code == 404
