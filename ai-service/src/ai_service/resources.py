"""ai-service's long-lived objects, built in one place for the life of the process: one Ollama
client per model backend (closed on the lifespan's exit stack), the pool that chooses among them,
its prober, and what uses them, in one frozen container that routes reach through one typed
dependency (`deps.ResourcesDep`)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

from infergate_common.circuit_breaker import CircuitBreaker
from prometheus_client import CollectorRegistry

from ai_service.backend import LlmServerClient
from ai_service.backend_metrics import BackendMetrics
from ai_service.backend_pool import BackendPool
from ai_service.backend_probe import BackendProber
from ai_service.config import Settings
from ai_service.llm import LlmClient, ModelTokens, create_ollama_client, stamp_request_id
from ai_service.openai_backend import OpenAiClient
from ai_service.routing_config import BackendSpec


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    backends: BackendPool
    llm: LlmClient


def open_resources(
    settings: Settings, stack: AsyncExitStack, *, registry: CollectorRegistry
) -> Resources:
    """Everything ai-service keeps for its life; metrics go to `registry`."""
    pool = _open_pool(settings, stack, registry=registry)
    BackendProber(pool, interval_s=settings.backend_probe_interval_seconds).start(stack)
    defaults = {
        name: value
        for name, value in (
            ("temperature", settings.default_temperature),
            ("seed", settings.default_seed),
        )
        if value is not None
    }
    llm = LlmClient(
        pool,
        default_model=settings.model,
        default_options=defaults,
        tokens=ModelTokens(registry),
        timeout=settings.ollama_timeout,
    )
    return Resources(settings=settings, backends=pool, llm=llm)


def _open_pool(
    settings: Settings, stack: AsyncExitStack, *, registry: CollectorRegistry
) -> BackendPool:
    def client_for(spec: BackendSpec) -> LlmServerClient:
        client: LlmServerClient
        if spec.kind == "openai":
            client = OpenAiClient(
                url=spec.url, timeout=spec.timeout, api_key=spec.api_key, hooks=[stamp_request_id]
            )
        else:
            client = create_ollama_client(url=spec.url, timeout=spec.timeout)
        stack.push_async_callback(client.close)
        return client

    def breaker_for(name: str) -> CircuitBreaker:
        return CircuitBreaker(
            threshold=settings.backend_failure_threshold,
            cooldown_s=settings.backend_cooldown_seconds,
            name=name,
        )

    return BackendPool.build(
        settings.routing,
        client_for=client_for,
        breaker_for=breaker_for,
        metrics=BackendMetrics(registry),
    )
