"""Redis and SecantusDB started by the Stack itself, as real processes."""

import dataclasses
import socket
from pathlib import Path

import pymongo
import pymongo.errors
import pytest
import redis
from infergate_devstack.config import StackConfig
from infergate_devstack.ports import PortInUseError, Ports
from infergate_devstack.probes import redis_ping
from infergate_devstack.processes import group_members
from infergate_devstack.stack import Stack


def _datastores(tmp_path: Path, ports: Ports | None = None) -> Stack:
    config = StackConfig(data_dir=tmp_path, ports=ports or Ports.free())
    return Stack(config, only={"redis", "mongo"})


def test_redis_and_mongo_answer_and_leave_nothing_running(tmp_path: Path) -> None:
    with _datastores(tmp_path) as stack:
        assert stack.process_names() == ["redis", "mongo"]
        assert redis.Redis.from_url(stack.redis_url).ping()
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(stack.mongo_uri)
        with client:
            assert client.admin.command("ping")["ok"] == 1.0
        groups = [stack.process(name).pid for name in stack.process_names()]

    assert all(pgid is not None and group_members(pgid) == [] for pgid in groups)
    assert (tmp_path / "logs" / "redis.log").read_text()


def test_neither_store_answers_without_credentials(tmp_path: Path) -> None:
    with _datastores(tmp_path) as stack:
        assert not redis_ping(stack.redis_port)  # NOAUTH: the default user is off
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=stack.redis_port, username="gateway", password="wrong").ping()
        anonymous = f"mongodb://127.0.0.1:{stack.mongo_port}/?directConnection=true"
        with (
            pymongo.MongoClient[dict[str, object]](anonymous) as client,
            pytest.raises(pymongo.errors.OperationFailure),
        ):
            client["infergate-usage"]["usage"].find_one()
        with pymongo.MongoClient[dict[str, object]](stack.service_mongo_uri("auth")) as client:
            client["infergate-auth"]["users"].insert_one({"probe": 1})
            with pytest.raises(pymongo.errors.OperationFailure):  # not its database
                client["infergate-usage"]["usage"].find_one()
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0  # owner only


def test_mongo_keeps_its_data_across_a_restart(tmp_path: Path) -> None:
    with _datastores(tmp_path) as stack:
        uri = stack.mongo_uri
        with pymongo.MongoClient[dict[str, object]](uri) as client:
            client["devstack"]["things"].insert_one({"name": "kept"})

        stack.stop("mongo")
        assert not stack.process("mongo").running()
        stack.start("mongo")

        with pymongo.MongoClient[dict[str, object]](uri) as client:
            assert client["devstack"]["things"].find_one({"name": "kept"}) is not None


def test_a_port_in_use_stops_the_start_before_anything_runs(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        stack = _datastores(tmp_path, dataclasses.replace(Ports.free(), mongo=taken))

        with pytest.raises(PortInUseError, match=f"port {taken} \\(mongo\\).*MONGO_PORT="):
            stack.up()

    assert stack.process_names() == []
