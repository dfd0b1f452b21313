"""auth-service: issues and verifies API keys (internal; requires the internal token)."""

from __future__ import annotations

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

from auth_service.config import Settings, get_settings
from auth_service.idempotency import IdempotencyRecords
from auth_service.repository import UserRepository
from auth_service.routes.auth import router as auth_router
from auth_service.routes.changes import router as changes_router
from auth_service.routes.keys import router as keys_router
from auth_service.routes.users import router as users_router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            client, db = open_mongo(
                settings.mongo_uri,
                default_db="infergate-auth",
                timeout_ms=settings.mongo_timeout_ms,
            )
            stack.push_async_callback(client.close)
            users = UserRepository(db["users"])
            idempotency = IdempotencyRecords(db["idempotency"])
            await users.ensure_indexes()
            await idempotency.ensure_indexes()
            yield {"users": users, "idempotency": idempotency, "mongo": client}

    app = create_service_app(
        settings=settings,
        lifespan=lifespan,
        title="InferGate auth-service",
        description="Internal: API key issuance, verification, rotation and revocation; users.",
    )
    install_mongo_error_handler(app)
    app.include_router(readiness_router())
    guard = [Depends(internal_token_guard(settings.internal_token))]
    errors = {**INTERNAL_AUTH_RESPONSES, **DATABASE_ERROR_RESPONSES}
    for router in (auth_router, keys_router, users_router, changes_router):
        app.include_router(router, dependencies=guard, responses=errors)
    return app
