"""The whole stack with the real services (the LLM is a stand-in that only answers the banner):
wiring, restarts of single processes, gateway failover, and a complete stop."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from infergate_devstack.config import StackConfig
from infergate_devstack.ports import Ports
from infergate_devstack.processes import group_members
from infergate_devstack.stack import Stack


def _config(data_dir: Path, llm_url: str, *, gateway_replicas: int = 1) -> StackConfig:
    return StackConfig(
        data_dir=data_dir,
        ports=Ports.free(),
        ollama_url=llm_url,
        env={"REGISTRATION_RATE_LIMIT": "1000", "LOG_LEVEL": "warning"},
        gateway_replicas=gateway_replicas,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, ollama_banner: str) -> Iterator[Stack]:
    config = _config(tmp_path_factory.mktemp("stack"), ollama_banner, gateway_replicas=2)
    with Stack(config) as running:
        yield running


def _environ(stack: Stack, name: str) -> dict[str, str]:
    raw = Path(f"/proc/{stack.process(name).pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(): value.decode() for key, value in pairs}


def test_the_public_url_reaches_the_gateway_through_nginx(stack: Stack) -> None:
    response = httpx.get(f"{stack.public_url}/healthz")

    assert response.status_code == 200
    assert stack.llm_description == f"Ollama at {stack.llm_url}"


def test_each_service_gets_its_wiring_and_the_overrides(stack: Stack) -> None:
    auth, usage, ai, gateway = (_environ(stack, n) for n in ("auth", "usage", "ai", "gateway"))

    assert "/infergate-auth?replicaSet=secantus&" in auth["MONGO_URI"]
    assert "/infergate-usage?replicaSet=secantus&" in usage["MONGO_URI"]
    assert ai["OLLAMA_URL"] == stack.llm_url
    assert gateway["AUTH_SERVICE_URL"] == stack.service_url("auth")
    assert gateway["REDIS_PORT"] == str(stack.redis_port)
    assert {env["INTERNAL_TOKEN"] for env in (auth, usage, ai, gateway)} == {stack.internal_token}
    assert gateway["REGISTRATION_RATE_LIMIT"] == "1000"
    assert gateway["LOG_LEVEL"] == "warning"
    assert gateway["SERVICE_NAME"] == "api-gateway"


def test_a_stopped_service_can_be_started_again(stack: Stack) -> None:
    stack.stop("usage")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{stack.service_url('usage')}/healthz")

    stack.start("usage")

    assert httpx.get(f"{stack.service_url('usage')}/healthz").status_code == 200


def test_nginx_routes_around_a_killed_gateway_replica(stack: Stack) -> None:
    stack.stop("gateway", kill=True)
    try:
        statuses = {httpx.get(f"{stack.public_url}/healthz").status_code for _ in range(6)}
        registered = httpx.post(
            f"{stack.public_url}/v1/register", json={"email": "failover@example.com"}
        )
    finally:
        stack.start("gateway")

    assert statuses == {200}
    assert registered.status_code == 201


def test_the_stack_stops_completely(tmp_path: Path, ollama_banner: str) -> None:
    with Stack(_config(tmp_path, ollama_banner)) as stack:
        groups = [stack.process(name).pid for name in stack.process_names()]
        assert len(groups) == 7  # redis, mongo, auth, usage, ai, gateway, nginx

    assert [pgid for pgid in groups if pgid is not None and group_members(pgid)] == []
    assert not list((tmp_path / "pids").iterdir())
