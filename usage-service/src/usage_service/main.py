"""usage-service: meters tokens against monthly quotas and logs requests (internal)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from infergate_common.app import create_service_app
from infergate_common.internal_auth import INTERNAL_AUTH_RESPONSES, internal_token_guard
from infergate_common.mongo import (
    DATABASE_ERROR_RESPONSES,
    install_mongo_error_handler,
    open_mongo,
    readiness_router,
)

from usage_service.config import Settings, get_settings
from usage_service.expiry import ReservationExpiry
from usage_service.metering import Metering
from usage_service.request_log import RequestLogRepository
from usage_service.routes.usage import router as usage_router
from usage_service.sweeper import Sweeper
from usage_service.usage_repository import UsageRepository


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            client, db = open_mongo(
                settings.mongo_uri,
                default_db="infergate-usage",
                timeout_ms=settings.mongo_timeout_ms,
            )
            stack.push_async_callback(client.close)
            usage = UsageRepository(db["usage"])
            expiry = ReservationExpiry(db["usage"])
            logs = RequestLogRepository(db["requestlogs"])
            await usage.ensure_indexes()
            await expiry.ensure_index()
            await logs.ensure_indexes()
            # These run before the client closes: writes still in a batch are finished.
            stack.push_async_callback(logs.drain)
            stack.push_async_callback(usage.drain)
            metering = Metering(usage=usage, expiry=expiry, logs=logs, settings=settings)
            sweeper = Sweeper(metering, interval_s=settings.reservation_sweep_seconds)
            sweeping = asyncio.create_task(sweeper.run())
            stack.push_async_callback(_finish, sweeper, sweeping)
            yield {"metering": metering, "request_logs": logs, "mongo": client}

    app = create_service_app(
        settings=settings,
        lifespan=lifespan,
        title="InferGate usage-service",
        description="Internal: token quotas, reservations and the request log.",
    )
    install_mongo_error_handler(app)
    app.include_router(readiness_router())
    app.include_router(
        usage_router,
        dependencies=[Depends(internal_token_guard(settings.internal_token))],
        responses={**INTERNAL_AUTH_RESPONSES, **DATABASE_ERROR_RESPONSES},
    )
    return app


async def _finish(sweeper: Sweeper, sweeping: asyncio.Task[None]) -> None:
    sweeper.stop()
    await sweeping
