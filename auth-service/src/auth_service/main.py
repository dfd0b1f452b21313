"""auth-service: issues and verifies API keys (internal; requires the internal token)."""

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

from auth_service.config import Settings, get_settings
from auth_service.deps import get_mongo
from auth_service.resources import Resources, open_resources
from auth_service.routes.auth import router as auth_router
from auth_service.routes.changes import router as changes_router
from auth_service.routes.keys import router as keys_router
from auth_service.routes.users import router as users_router


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
        title="InferGate auth-service",
        description="Internal: API key issuance, verification, rotation and revocation; users.",
        internal=True,
    )
    install_mongo_error_handler(app)
    app.include_router(readiness_router(get_mongo))
    guard = [Depends(internal_token_guard(settings.internal_token))]
    errors = {**INTERNAL_AUTH_RESPONSES, **DATABASE_ERROR_RESPONSES}
    for router in (auth_router, keys_router, users_router, changes_router):
        app.include_router(router, dependencies=guard, responses=errors)
    return app
