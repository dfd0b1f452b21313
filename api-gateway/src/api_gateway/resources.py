"""The gateway's long-lived objects, built in one place for the life of the process.

`open_resources` makes every client, limiter, cache and background task, registers each on the
lifespan's exit stack right after it is made (closed in reverse order), and returns one frozen
container; routes reach it through one typed dependency (`deps.ResourcesDep`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
from infergate_common.errors import AppError
from infergate_common.http_client import InternalServiceClient, build_internal_client
from infergate_common.metrics import lifespan_registry
from infergate_common.tasks import cancel_and_wait
from infergate_common.wire import Wire
from prometheus_client import CollectorRegistry

from api_gateway.auth_failures import AuthFailures
from api_gateway.billing import Billing
from api_gateway.circuit_breaker import CircuitBreakers
from api_gateway.clients import AiClient, AuthClient, UsageClient
from api_gateway.config import Settings
from api_gateway.key_cache import VerifiedKeyCache
from api_gateway.key_lifecycle import KeyLifecycle
from api_gateway.key_versions import KEY_VERSION_SECONDS, KeyVersions
from api_gateway.models import ModelCatalog
from api_gateway.rate_limit import SlidingWindowLimiter
from api_gateway.readiness import Readiness
from api_gateway.redis_store import RedisClient, open_redis, redis_ready
from api_gateway.response_cache import ResponseCache
from api_gateway.settlement_outbox import SettlementOutbox
from api_gateway.settler import Settler
from api_gateway.telemetry import GatewayTelemetry


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    auth: AuthClient
    usage: UsageClient
    ai: AiClient
    redis: RedisClient
    limiter: SlidingWindowLimiter  # the users' chat limit
    registrations: SlidingWindowLimiter  # registrations per client network
    breakers: CircuitBreakers
    catalog: ModelCatalog
    keys: KeyLifecycle
    billing: Billing
    settler: Settler
    readiness: Readiness
    telemetry: GatewayTelemetry
    cache: ResponseCache | None  # None: CACHE_TTL_SECONDS is 0


def open_resources(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    registry: CollectorRegistry,
    transport: httpx.AsyncBaseTransport | None,
) -> Resources:
    """Everything the gateway keeps for its life; its metrics go to `registry` (/metrics)."""
    telemetry = GatewayTelemetry.create(
        lifespan_registry(registry, stack), models=settings.allowed_models
    )
    metrics = telemetry.metrics

    def wire(url: str, timeout: float) -> Wire:
        made = build_internal_client(
            base_url=url,
            internal_token=settings.internal_token,
            timeout=timeout,
            transport=transport,
        )
        stack.push_async_callback(made.close)
        return made

    calls = metrics.internal_calls
    auth = AuthClient(wire(settings.auth_service_url, settings.auth_timeout), metrics=calls)
    usage = UsageClient(wire(settings.usage_service_url, settings.usage_timeout), metrics=calls)
    ai = AiClient(wire(settings.ai_service_url, settings.ai_timeout), metrics=calls)
    store = open_redis(settings, stack)
    fail_open = settings.rate_limit_failure_mode == "open"
    keys = KeyLifecycle(
        auth=auth,
        cache=VerifiedKeyCache(ttl_seconds=settings.key_cache_seconds),
        versions=KeyVersions(
            store,
            keep_seconds=KEY_VERSION_SECONDS,
            errors=metrics.redis_errors.labels("key_versions"),
        ),
        failures=AuthFailures(
            SlidingWindowLimiter(store, fail_open=True, name="auth_failures", metrics=metrics),
            limit=settings.auth_failure_rate_limit,
            window_s=settings.auth_failure_rate_window,
        ),
        follow_interval_s=settings.key_changes_seconds,
        lookups=metrics.key_cache,
    )
    outbox = SettlementOutbox(store, lease_ms=int(settings.settlement_retry_seconds * 1000))
    settler = Settler(
        usage=usage,
        outbox=outbox,
        claim_interval_s=settings.settlement_claim_seconds,
        metrics=metrics,
        linger_s=settings.settlement_batch_ms / 1000,
    )
    billing = Billing(
        usage=usage,
        outbox=outbox,
        settler=settler,
        mark_ms=settings.chat_deadline_seconds * 1000,
        metrics=metrics,
        room_seconds=settings.early_model_call_seconds,
    )
    _run_in_background(stack, keys.follow_changes())
    settler.start()
    # On shutdown, after the requests in flight: settlements still being recorded, then those
    # queued for delivery (before the clients they need are closed).
    stack.push_async_callback(settler.close, timeout_s=2 * settings.usage_timeout)
    stack.push_async_callback(billing.drain)
    cache = None
    if settings.cache_ttl_seconds:
        cache = ResponseCache(
            store,
            settings=settings,
            lookups=metrics.response_cache,
            errors=metrics.redis_errors.labels("response_cache"),
        )
        stack.push_async_callback(cache.drain)
    return Resources(
        settings=settings,
        auth=auth,
        usage=usage,
        ai=ai,
        redis=store,
        limiter=SlidingWindowLimiter(store, fail_open=fail_open, name="user", metrics=metrics),
        registrations=SlidingWindowLimiter(
            store, fail_open=fail_open, name="registration", metrics=metrics
        ),
        breakers=CircuitBreakers(
            threshold=settings.circuit_failure_threshold,
            cooldown_s=settings.circuit_cooldown_seconds,
            metrics=metrics,
        ),
        catalog=ModelCatalog(settings.allowed_models, default=settings.model),
        keys=keys,
        billing=billing,
        settler=settler,
        readiness=Readiness(
            {
                "redis": lambda: redis_ready(store),
                "auth": lambda: _service_ready(auth),
                "usage": lambda: _service_ready(usage),
                "ai": lambda: _service_ready(ai),
            }
        ),
        telemetry=telemetry,
        cache=cache,
    )


def _run_in_background(stack: AsyncExitStack, work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(work)
    stack.push_async_callback(cancel_and_wait, task)


async def _service_ready(client: InternalServiceClient) -> bool:
    try:
        await client.call("GET", "/readyz", call_timeout=2.0)
    except AppError:
        return False
    return True
