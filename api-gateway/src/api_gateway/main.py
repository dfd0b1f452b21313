"""api-gateway: the public InferGate API in front of auth, usage and ai."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import redis.asyncio as redis
from fastapi import FastAPI
from infergate_common.app import create_service_app
from infergate_common.http_client import build_internal_client
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from api_gateway.billing import Billing
from api_gateway.circuit_breaker import CircuitBreaker
from api_gateway.clients import AiClient, AuthClient, UsageClient
from api_gateway.config import Settings, get_settings
from api_gateway.key_cache import VerifiedKeyCache
from api_gateway.key_versions import KEY_VERSION_SECONDS, KeyVersions
from api_gateway.models import ModelCatalog
from api_gateway.openai_errors import render_gateway_error
from api_gateway.rate_limit import SlidingWindowLimiter
from api_gateway.rate_limit_headers import RateLimitHeadersMiddleware
from api_gateway.routes.admin import router as admin_router
from api_gateway.routes.health import router as health_router
from api_gateway.routes.keys import router as keys_router
from api_gateway.routes.openai import router as openai_router
from api_gateway.routes.public import router as public_router
from api_gateway.settlement_outbox import SettlementOutbox
from api_gateway.settler import Settler

FIELD_MESSAGES = {"prompt": "Prompt is required", "email": "A valid email is required"}


def create_app(
    settings: Settings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The gateway app; `transport` replaces the network to the internal services in tests."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            state: dict[str, Any] = {}
            for name, cls, url, timeout in (
                ("auth_client", AuthClient, settings.auth_service_url, settings.auth_timeout),
                ("usage_client", UsageClient, settings.usage_service_url, settings.usage_timeout),
                ("ai_client", AiClient, settings.ai_service_url, settings.ai_timeout),
            ):
                http = build_internal_client(
                    base_url=url,
                    internal_token=settings.internal_token,
                    timeout=timeout,
                    transport=transport,
                )
                stack.push_async_callback(http.close)
                state[name] = cls(http)
            redis_client = redis.Redis(
                host=settings.redis_host,
                port=settings.redis_port,
                socket_timeout=settings.redis_timeout,
                socket_connect_timeout=settings.redis_timeout,
                # One quick retry (a pooled connection may have been dropped by a restart);
                # redis-py's default, 10 retries with backoff, holds a request ~4.5 s when
                # Redis is down, where fail-open should answer at once.
                retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
            )
            stack.push_async_callback(redis_client.aclose)
            state["redis"] = redis_client
            state["breaker"] = CircuitBreaker(
                threshold=settings.circuit_failure_threshold,
                cooldown_s=settings.circuit_cooldown_seconds,
            )
            state["key_cache"] = VerifiedKeyCache(ttl_seconds=settings.key_cache_seconds)
            state["key_versions"] = KeyVersions(redis_client, keep_seconds=KEY_VERSION_SECONDS)
            state["catalog"] = ModelCatalog(settings.allowed_models, default=settings.model)
            state["limiter"] = SlidingWindowLimiter(
                redis_client, fail_open=settings.rate_limit_failure_mode == "open"
            )
            outbox = SettlementOutbox(
                redis_client, lease_ms=int(settings.settlement_retry_seconds * 1000)
            )
            settler = Settler(
                usage=state["usage_client"],
                outbox=outbox,
                claim_interval_s=settings.settlement_claim_seconds,
            )
            state["settler"] = settler
            state["billing"] = Billing(
                usage=state["usage_client"],
                outbox=outbox,
                settler=settler,
                mark_ms=settings.chat_deadline_seconds * 1000,
            )
            settler.start()
            # On shutdown, after the requests in flight: settlements still being recorded,
            # then those queued for delivery (before the clients they need are closed).
            stack.push_async_callback(settler.close, timeout_s=2 * settings.usage_timeout)
            stack.push_async_callback(state["billing"].drain)
            yield state

    app = create_service_app(
        settings=settings,
        lifespan=lifespan,
        title="InferGate",
        description="Self-hosted AI API gateway: API keys, rate limits, token quotas, LLM calls.",
        field_messages=FIELD_MESSAGES,
        render_error=render_gateway_error,
    )
    app.add_middleware(RateLimitHeadersMiddleware)
    app.include_router(health_router)
    app.include_router(public_router)
    app.include_router(openai_router)
    app.include_router(keys_router)
    if settings.admin_enabled:
        # Without ADMIN_TOKEN the admin routes do not exist at all (404, not in the OpenAPI).
        app.include_router(admin_router)
    return app
