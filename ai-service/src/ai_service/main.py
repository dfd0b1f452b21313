"""ai-service: calls the LLM (Ollama's API) for the gateway (internal)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse
from infergate_common.app import (
    READINESS_RESPONSES,
    ReadinessResponse,
    create_service_app,
    metrics_registry,
)
from infergate_common.internal_auth import INTERNAL_AUTH_RESPONSES, internal_token_guard
from infergate_common.metrics import lifespan_registry

from ai_service.backend_probe import readiness
from ai_service.config import Settings, get_settings
from ai_service.deps import ResourcesDep
from ai_service.resources import Resources, open_resources
from ai_service.routes.ai import router as ai_router


def _readiness_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/readyz", response_model=ReadinessResponse, responses=READINESS_RESPONSES)
    async def readyz(resources: ResourcesDep) -> JSONResponse:
        """Readiness: every configured model has a backend that answers and is in rotation."""
        ready, checks = await readiness(resources.backends)
        if ready:
            return JSONResponse({"status": "ready", "checks": checks})
        return JSONResponse({"status": "unavailable", "checks": checks}, 503)

    return router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Resources]]:
        async with AsyncExitStack() as stack:
            registry = lifespan_registry(metrics_registry(app), stack)
            yield {"resources": open_resources(settings, stack, registry=registry)}

    app = create_service_app(
        settings=settings,
        lifespan=lifespan,
        title="InferGate ai-service",
        description="Internal: model calls through Ollama's API.",
        internal=True,
    )
    app.include_router(_readiness_router())
    app.include_router(
        ai_router,
        dependencies=[Depends(internal_token_guard(settings.internal_token))],
        responses=INTERNAL_AUTH_RESPONSES,
    )
    return app
