"""usage-service's own metrics, against a real MongoDB-protocol server: the sweeper's passes and
what it released, group-commit batch sizes, and the database's failed commands."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any

import httpx
from fastapi import FastAPI
from infergate_devstack.components.datastores import mongo_uri
from prometheus_client import CollectorRegistry
from pymongo import InsertOne
from pymongo.asynchronous.collection import AsyncCollection
from usage_calls import new_user, reserve, sample, settings_for
from usage_service.group_commit import DUPLICATE_KEY, GroupCommit
from usage_service.main import create_app
from usage_service.telemetry import UsageMetrics

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


async def test_an_expired_reservation_is_counted_with_its_tokens(
    app_client: AppClient, db_uri: str
) -> None:
    settings = settings_for(db_uri, reservation_ttl_seconds=1, reservation_sweep_seconds=0.1)
    async with app_client(create_app(settings)) as client:
        before = (await client.get("/metrics")).text  # served without the internal token
        assert sample(before, "infergate_quota_reservations_total", outcome="expired") == 0
        assert sample(before, "infergate_usage_sweeper_runs_total", outcome="error") == 0
        assert (await reserve(client, new_user(), 300, hold_seconds=1)).status_code == 201
        assert (await reserve(client, new_user(), 200, hold_seconds=1)).status_code == 201
        deadline = time.monotonic() + 15
        text = before
        while time.monotonic() < deadline:
            text = (await client.get("/metrics")).text
            if sample(text, "infergate_usage_sweeper_released_total") == 2:
                break
            await asyncio.sleep(0.05)
        assert sample(text, "infergate_usage_sweeper_released_total") == 2
        assert sample(text, "infergate_quota_reservations_total", outcome="expired") == 2
        assert sample(text, "infergate_quota_tokens_total", kind="expired") == 500
        assert (sample(text, "infergate_usage_sweeper_runs_total", outcome="ok") or 0) >= 1
        last = sample(text, "infergate_usage_sweeper_last_success_timestamp_seconds")
        assert last is not None
        assert time.time() - last < 10
        # Their log entries were written through a group commit.
        logged = sample(text, "infergate_usage_group_commit_batch_size_sum", writer="request_log")
        assert (logged or 0) >= 2


async def test_group_commit_batch_sizes_add_up_to_the_writes(db: Any) -> None:
    registry = CollectorRegistry()
    metrics = UsageMetrics.create(registry)
    calls: list[int] = []
    target: AsyncCollection[dict[str, Any]] = db[f"batches-{uuid.uuid4().hex[:6]}"]

    class Counting:
        async def bulk_write(self, requests: Any, *, ordered: bool) -> object:
            calls.append(len(requests))
            return await target.bulk_write(list(requests), ordered=ordered)

    group = GroupCommit(Counting(), batch_sizes=metrics.batch_size.labels("request_log"))
    written = await asyncio.gather(
        *(group.write(InsertOne({"_id": n}), refused=frozenset({DUPLICATE_KEY})) for n in range(40))
    )
    assert all(written)
    labels = {"writer": "request_log"}
    value = registry.get_sample_value
    assert value("infergate_usage_group_commit_batch_size_sum", labels) == 40
    assert value("infergate_usage_group_commit_batch_size_count", labels) == len(calls)
    assert len(calls) < 40  # batched


async def test_failed_commands_and_an_unreachable_server_are_counted(mongo_port: int) -> None:
    from infergate_common.mongo import MongoErrors, open_mongo
    from pymongo.errors import OperationFailure

    registry = CollectorRegistry()
    errors = MongoErrors(registry, service="usage-service")
    client, db = open_mongo(
        mongo_uri(mongo_port, "errors"), default_db="errors", timeout_ms=2000, errors=errors
    )
    try:
        await db.command("ping")
        with suppress(OperationFailure):
            await db.command("noSuchCommandAtAll")
        labels = {"service": "usage-service", "command": "noSuchCommandAtAll"}
        assert registry.get_sample_value("infergate_mongo_errors_total", labels) == 1
        ping = {"service": "usage-service", "command": "ping"}
        assert registry.get_sample_value("infergate_mongo_errors_total", ping) is None
        # Listing the indexes of a collection not made yet is an answer, not a failure.
        await db[f"none-{uuid.uuid4().hex[:6]}"].index_information()
        listing = {"service": "usage-service", "command": "listIndexes"}
        assert registry.get_sample_value("infergate_mongo_errors_total", listing) is None
    finally:
        await client.close()


async def test_a_database_that_cannot_be_reached_is_counted_by_heartbeat() -> None:
    import socket

    from infergate_common.mongo import MongoErrors, open_mongo
    from pymongo.errors import ServerSelectionTimeoutError

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = CollectorRegistry()
    errors = MongoErrors(registry, service="auth-service")
    client, db = open_mongo(
        f"mongodb://127.0.0.1:{port}/x", default_db="x", timeout_ms=300, errors=errors
    )
    labels = {"service": "auth-service", "command": "heartbeat"}
    try:
        assert registry.get_sample_value("infergate_mongo_errors_total", labels) == 0
        with suppress(ServerSelectionTimeoutError):
            await db.command("ping")
        assert (registry.get_sample_value("infergate_mongo_errors_total", labels) or 0) >= 1
    finally:
        await client.close()


async def test_with_metrics_off_nothing_is_served_and_the_service_works(
    app_client: AppClient, db_uri: str
) -> None:
    settings = settings_for(db_uri, metrics_enabled=False, reservation_ttl_seconds=1)
    async with app_client(create_app(settings)) as client:
        assert (await client.get("/metrics")).status_code == 404
        assert (await reserve(client, new_user(), 300)).status_code == 201
