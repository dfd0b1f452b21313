"""Fixtures shared by every test directory: real Redis and MongoDB-protocol servers.

Unit tests run each service's own Redis or Mongo logic against these real servers (never fakes);
they are started once per session on free loopback ports by the devstack's own process code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from infergate_devstack.components.datastores import redis_spec, scratch_mongo
from infergate_devstack.install import ensure_secantus, require_program
from infergate_devstack.ports import free_ports
from infergate_devstack.processes import ManagedProcess


@pytest.fixture(scope="session")
def datastores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    root: Path = tmp_path_factory.mktemp("datastores")
    redis_port, mongo_port = free_ports(2)
    processes = [
        ManagedProcess(
            redis_spec(
                program=require_program("redis-server"),
                port=redis_port,
                data_dir=root / "redis",
                log_path=root / "redis.log",
            ),
            pid_dir=root,
        ),
        scratch_mongo(ensure_secantus(print), root, mongo_port),
    ]
    try:
        for process in processes:
            process.spawn()
        for process in processes:
            process.wait_ready()
        yield {"redis": redis_port, "mongo": mongo_port}
    finally:
        for process in reversed(processes):
            process.stop()


@pytest.fixture(scope="session")
def redis_port(datastores: dict[str, int]) -> int:
    return datastores["redis"]


@pytest.fixture(scope="session")
def mongo_port(datastores: dict[str, int]) -> int:
    """Each test module builds its own URI (`mongo_uri(port, database)`) to keep data apart."""
    return datastores["mongo"]


AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def app_client() -> AppClient:
    """Open an app with its lifespan run, and a client that calls it in-process."""

    @asynccontextmanager
    async def open_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://service.test"
            ) as client,
        ):
            yield client

    return open_app
