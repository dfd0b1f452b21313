"""usage-service's long-lived objects, built in one place for the life of the process.

`open_resources` makes the database client, the repositories and the sweeper, registers each on
the lifespan's exit stack (closed in reverse order: the sweeper stops, batches still being
written finish, then the client closes) and returns one frozen container; routes reach it
through one typed dependency (`deps.ResourcesDep`)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass

from infergate_common.mongo import Mongo, open_service_mongo
from prometheus_client import CollectorRegistry

from usage_service.activity import ActivityReports
from usage_service.config import Settings
from usage_service.expiry import ReservationExpiry
from usage_service.metering import Metering
from usage_service.request_log import RequestLogRepository
from usage_service.sweeper import Sweeper
from usage_service.telemetry import UsageMetrics
from usage_service.usage_repository import UsageRepository
from usage_service.webhooks import Webhooks, open_webhooks


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    mongo: Mongo
    metering: Metering
    request_logs: RequestLogRepository
    reports: ActivityReports
    metrics: UsageMetrics
    webhooks: Webhooks


async def open_resources(
    settings: Settings, stack: AsyncExitStack, *, registry: CollectorRegistry
) -> Resources:
    """Everything usage-service keeps for its life (indexes ensured, the sweeper running);
    metrics go to `registry`."""
    metrics = UsageMetrics.create(registry)
    client, db = open_service_mongo(
        settings, stack, registry=registry, default_db="infergate-usage"
    )
    usage = UsageRepository(db["usage"], batch_sizes=metrics.batch_size.labels("usage"))
    expiry = ReservationExpiry(db["usage"])
    logs = RequestLogRepository(
        db["requestlogs"], batch_sizes=metrics.batch_size.labels("request_log")
    )
    await usage.ensure_indexes()
    await expiry.ensure_index()
    await logs.ensure_indexes()
    # These run before the client closes: writes still in a batch are finished.
    stack.push_async_callback(logs.drain)
    stack.push_async_callback(usage.drain)
    webhooks = await open_webhooks(settings, stack, db=db, hints=usage, registry=registry)
    metering = Metering(
        usage=usage,
        expiry=expiry,
        logs=logs,
        settings=settings,
        metrics=metrics,
        observer=webhooks.alerts,
    )
    sweeper = Sweeper(metering, interval_s=settings.reservation_sweep_seconds, metrics=metrics)
    sweeping = asyncio.create_task(sweeper.run())
    stack.push_async_callback(_finish, sweeper, sweeping)
    return Resources(
        settings=settings,
        mongo=client,
        metering=metering,
        request_logs=logs,
        reports=ActivityReports(logs=db["requestlogs"], usage=db["usage"]),
        metrics=metrics,
        webhooks=webhooks,
    )


async def _finish(sweeper: Sweeper, sweeping: asyncio.Task[None]) -> None:
    sweeper.stop()
    await sweeping
