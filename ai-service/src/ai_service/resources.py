"""ai-service's long-lived objects, built in one place for the life of the process: the
Ollama client (closed on the lifespan's exit stack) and what uses it, in one frozen container
that routes reach through one typed dependency (`deps.ResourcesDep`)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from ai_service.config import Settings
from ai_service.llm import LlmClient, ModelTokens, create_ollama_client


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    llm: LlmClient


def open_resources(
    settings: Settings, stack: AsyncExitStack, *, registry: CollectorRegistry
) -> Resources:
    """Everything ai-service keeps for its life; metrics go to `registry`."""
    client = create_ollama_client(url=settings.ollama_url, timeout=settings.ollama_timeout)
    stack.push_async_callback(client.close)
    defaults = {
        name: value
        for name, value in (
            ("temperature", settings.default_temperature),
            ("seed", settings.default_seed),
        )
        if value is not None
    }
    llm = LlmClient(
        client,
        default_model=settings.model,
        default_options=defaults,
        tokens=ModelTokens(registry),
    )
    return Resources(settings=settings, llm=llm)
