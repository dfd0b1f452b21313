"""usage-service: meters tokens against monthly quotas and logs requests (internal)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import Depends, FastAPI
from infergate_common.app import create_service_app, metrics_registry
from infergate_common.internal_auth import INTERNAL_AUTH_RESPONSES, internal_token_guard
from infergate_common.metrics import lifespan_registry
from infergate_common.mongo import (
    DATABASE_ERROR_RESPONSES,
    install_mongo_error_handler,
    readiness_router,
)

from usage_service.config import Settings, get_settings
from usage_service.deps import get_mongo
from usage_service.resources import Resources, open_resources
from usage_service.routes.activity import router as activity_router
from usage_service.routes.usage import router as usage_router
from usage_service.routes.webhooks import router as webhooks_router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Resources]]:
        async with AsyncExitStack() as stack:
            registry = lifespan_registry(metrics_registry(app), stack)
            yield {"resources": await open_resources(settings, stack, registry=registry)}

    app = create_service_app(
        settings=settings,
        lifespan=lifespan,
        title="InferGate usage-service",
        description="Internal: token quotas, reservations and the request log.",
        internal=True,
    )
    install_mongo_error_handler(app)
    app.include_router(readiness_router(get_mongo))
    guard = [Depends(internal_token_guard(settings.internal_token))]
    errors = {**INTERNAL_AUTH_RESPONSES, **DATABASE_ERROR_RESPONSES}
    # The reports first: `/usage/{user_id}` would take `/usage/daily` and `/usage/top`.
    for router in (activity_router, usage_router, webhooks_router):
        app.include_router(router, dependencies=guard, responses=errors)
    return app
