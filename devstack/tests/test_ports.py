import socket

import pytest
from infergate_devstack.ports import PortInUseError, Ports, ensure_free, port_is_free


def test_default_ports_are_the_documented_ones() -> None:
    ports = Ports.default()

    assert (ports.nginx, ports.gateway, ports.auth, ports.usage, ports.ai) == (
        8080,
        4000,
        4001,
        4002,
        4003,
    )
    assert (ports.redis, ports.mongo, ports.llm) == (6379, 27017, 11434)


def test_free_ports_are_distinct_and_free() -> None:
    ports = Ports.free()
    values = [ports.of(name) for name in Ports.names()]

    assert len(set(values)) == len(values)
    assert all(port_is_free(port) for port in values)


def test_ports_from_env_override_only_what_is_set() -> None:
    ports = Ports.from_env({"NGINX_PORT": "8081", "REDIS_PORT": "6380", "UNRELATED": "x"})

    assert ports == Ports(nginx=8081, redis=6380)


def test_ports_from_env_reject_what_is_not_a_port() -> None:
    with pytest.raises(ValueError, match="MONGO_PORT='abc'"):
        Ports.from_env({"MONGO_PORT": "abc"})


def test_a_port_in_use_is_named_with_the_variable_that_changes_it() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        with pytest.raises(PortInUseError) as error:
            ensure_free([("gateway", port)])

    assert f"port {port} (gateway)" in str(error.value)
    assert "GATEWAY_PORT=" in str(error.value)
