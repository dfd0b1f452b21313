"""api-gateway: the public InferGate API in front of auth, usage and ai."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI
from infergate_common.app import create_service_app, metrics_registry

from api_gateway.config import Settings, get_settings
from api_gateway.docs import docs_router
from api_gateway.openai_errors import render_gateway_error
from api_gateway.overhead import OverheadMiddleware
from api_gateway.rate_limit_headers import RateLimitHeadersMiddleware
from api_gateway.resources import Resources, open_resources
from api_gateway.routes.activity import router as activity_router
from api_gateway.routes.admin import router as admin_router
from api_gateway.routes.health import router as health_router
from api_gateway.routes.keys import router as keys_router
from api_gateway.routes.openai import router as openai_router
from api_gateway.routes.public import router as public_router
from api_gateway.routes.webhooks import router as webhooks_router

FIELD_MESSAGES = {"prompt": "Prompt is required", "email": "A valid email is required"}


def create_app(
    settings: Settings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The gateway app; `transport` replaces the network to the internal services in tests."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Resources]]:
        async with AsyncExitStack() as stack:
            yield {
                "resources": open_resources(
                    settings, stack, registry=metrics_registry(app), transport=transport
                )
            }

    app = create_service_app(
        settings=settings,
        lifespan=lifespan,
        title="InferGate",
        description="Self-hosted AI API gateway: API keys, rate limits, token quotas, LLM calls.",
        field_messages=FIELD_MESSAGES,
        render_error=render_gateway_error,
        # /docs is this gateway's own page (api_gateway.docs): Swagger UI served from here, no
        # CDN, no inline script.
        public_docs=False,
    )
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(OverheadMiddleware)
    app.include_router(health_router)
    app.include_router(public_router)
    app.include_router(activity_router)
    app.include_router(openai_router)
    app.include_router(keys_router)
    app.include_router(webhooks_router)
    app.include_router(docs_router(title=app.title, openapi_url=app.openapi_url or "/openapi.json"))
    if settings.admin_enabled:
        # Without ADMIN_TOKEN the admin routes do not exist at all (404). They are never in the
        # public OpenAPI document either: operators call a gateway's own port.
        app.include_router(admin_router, include_in_schema=False)
    return app
