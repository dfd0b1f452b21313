"""Several processes per service in the local stack's plan (nothing is started): names, ports,
the gateway's lists of replica URLs, Prometheus' targets, the summary and `--replicas`."""

import argparse
import socket
from pathlib import Path

import pytest
from infergate_devstack.cli import parse_replicas
from infergate_devstack.config import StackConfig
from infergate_devstack.plan import StackPlan
from infergate_devstack.ports import PortInUseError, Ports, ensure_free
from infergate_devstack.stack import Stack
from infergate_devstack.summary import format_summary

TWO_OF_EACH = {"gateway": 2, "auth": 2, "usage": 2, "ai": 3}


def _config(data_dir: Path) -> StackConfig:
    return StackConfig(
        data_dir=data_dir,
        ports=Ports.free(),
        ollama_url="http://127.0.0.1:1",
        replicas=TWO_OF_EACH,
        observability=True,
    )


def test_every_replica_is_a_process_with_a_port_of_its_own(tmp_path: Path) -> None:
    plan = StackPlan(_config(tmp_path), only=None)

    names = plan.service_names({"auth", "usage", "ai", "gateway"})
    ports = dict(plan.ports_needed())

    assert names == [
        "auth", "auth-1", "usage", "usage-1", "ai", "ai-1", "ai-2", "gateway", "gateway-1",
    ]  # fmt: skip
    assert all(ports[name] == plan.service_port(name) for name in names)
    assert len(set(ports.values())) == len(ports)  # no port handed out twice
    assert plan.service_port("auth") == plan.config.ports.auth


def test_the_gateway_is_given_every_replica_of_each_service(tmp_path: Path) -> None:
    plan = StackPlan(_config(tmp_path), only=None)

    specs = {spec.name: spec for spec in plan.service_specs({"auth", "usage", "ai", "gateway"})}

    def urls(name: str) -> str:
        return ",".join(f"http://127.0.0.1:{plan.service_port(n)}" for n in (name, f"{name}-1"))

    for gateway in ("gateway", "gateway-1"):
        env = specs[gateway].env
        assert env["AUTH_SERVICE_URL"] == urls("auth")
        assert env["USAGE_SERVICE_URL"] == urls("usage")
        assert env["AI_SERVICE_URL"].count(",") == 2
        assert env["PORT"] == str(plan.service_port(gateway))
    assert specs["usage-1"].env["PORT"] == str(plan.service_port("usage-1"))
    assert specs["usage-1"].env["SERVICE_NAME"] == "usage-service"


def test_prometheus_scrapes_and_the_summary_lists_every_process(tmp_path: Path) -> None:
    stack = Stack(_config(tmp_path))
    plan = StackPlan(stack.config, only=None)

    summary = format_summary(stack, startup_s=1.0)
    spec = plan.prometheus_spec()
    config_file = Path(next(a for a in spec.argv if a.startswith("--config.file=")).split("=")[1])

    for name in stack.replica_names("usage") + stack.replica_names("ai"):
        assert stack.service_url(name) in summary
    assert "usage-service 2/2:" in summary
    assert "ai-service 3/3:" in summary
    assert config_file.read_text().count("127.0.0.1:") == 1 + sum(TWO_OF_EACH.values())
    assert "Admin API:" in summary
    assert "off (set ADMIN_TOKEN" in summary
    assert "operator console" not in summary


def test_the_summary_says_where_the_admin_api_is_when_it_is_on(tmp_path: Path) -> None:
    config = StackConfig(data_dir=tmp_path, ports=Ports.free(), env={"ADMIN_TOKEN": "a" * 20})
    stack = Stack(config)

    summary = format_summary(stack, startup_s=1.0)

    rows = dict(line.strip().split(":", 1) for line in summary.splitlines() if ":  " in line)

    assert (
        rows["Admin API"]
        .strip()
        .startswith(
            f"on (ADMIN_TOKEN): operator console at http://127.0.0.1:{config.ports.nginx_admin}/ "
        )
    )
    assert rows["Web console"].strip() == f"http://127.0.0.1:{config.ports.nginx}/"


def test_replicas_are_read_from_the_command_line_and_bad_ones_refused() -> None:
    assert parse_replicas("gateway=2, auth=3,usage=1") == {"gateway": 2, "auth": 3, "usage": 1}
    with pytest.raises(argparse.ArgumentTypeError, match="unknown service 'nginx'"):
        parse_replicas("nginx=2")
    with pytest.raises(argparse.ArgumentTypeError, match="from 1 to"):
        parse_replicas("ai=0")
    with pytest.raises(argparse.ArgumentTypeError, match="from 1 to"):
        parse_replicas("ai=two")


def test_a_service_without_replicas_is_refused(tmp_path: Path) -> None:
    config = StackConfig(data_dir=tmp_path, ports=Ports.free(), replicas={"usage": 0})

    with pytest.raises(ValueError, match="usage needs at least one replica"):
        StackPlan(config, only=None)


def test_the_operator_port_is_needed_and_checked_only_with_an_admin_token(tmp_path: Path) -> None:
    ports = Ports.free()
    with_admin = StackPlan(
        StackConfig(data_dir=tmp_path / "a", ports=ports, env={"ADMIN_TOKEN": "a" * 20}), only=None
    )
    without = StackPlan(
        StackConfig(data_dir=tmp_path / "b", ports=ports, env={"ADMIN_TOKEN": ""}), only=None
    )

    assert ("nginx_admin", ports.nginx_admin) in with_admin.ports_needed()
    assert "nginx_admin" not in dict(without.ports_needed())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports.nginx_admin))
        taken.listen()
        with pytest.raises(PortInUseError, match="NGINX_ADMIN_PORT=<port>"):
            ensure_free(with_admin.ports_needed())
