"""nginx: both configs pass `nginx -t`, and the local one answers its own errors in JSON."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from infergate_devstack.config import StackConfig, find_repo_root
from infergate_devstack.install import require_program
from infergate_devstack.nginx import NginxLayout, check_config, write_local_config
from infergate_devstack.ports import Ports
from infergate_devstack.stack import Stack

NGINX_DIR = find_repo_root() / "nginx"


def test_the_local_config_passes_nginx_t(tmp_path: Path) -> None:
    layout = NginxLayout(
        prefix=tmp_path / "nginx", logs_dir=tmp_path / "logs", snippets_dir=NGINX_DIR
    )
    conf = write_local_config(layout, listen_port=18080, gateway_ports=[14000, 14001])

    check_config(require_program("nginx"), conf=conf, prefix=layout.prefix)

    text = conf.read_text()
    assert "listen 127.0.0.1:18080;" in text
    assert text.count("max_fails=") == 2
    assert str(NGINX_DIR / "infergate-routes.conf") in text


def test_the_compose_config_passes_nginx_t(tmp_path: Path) -> None:
    """The compose file with `gateway` pointed at loopback (no Docker DNS here)."""
    for source in NGINX_DIR.glob("*.conf"):
        shutil.copy(source, tmp_path / source.name)
    conf = tmp_path / "nginx.conf"
    text = conf.read_text()
    assert "include infergate-http.conf;" in text
    assert "include infergate-routes.conf;" in text
    conf.write_text(text.replace("server gateway:4000", "server 127.0.0.1:4000"))

    check_config(
        require_program("nginx"), conf=conf, prefix=tmp_path, extra=f"pid {tmp_path}/nginx.pid;"
    )


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """nginx alone: every path it proxies finds no gateway."""
    config = StackConfig(data_dir=tmp_path_factory.mktemp("edge"), ports=Ports.free())
    with Stack(config, only={"nginx"}) as stack:
        yield stack.public_url


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
