"""ai-service settings."""

from __future__ import annotations

from functools import lru_cache

from infergate_common.settings import ServiceSettings
from pydantic import PositiveFloat


class Settings(ServiceSettings):
    service_name: str = "ai-service"
    port: int = 4003
    ollama_url: str = "http://127.0.0.1:11434"
    model: str = "llama3"
    # Seconds one model call may take before the caller gets 504.
    ollama_timeout: PositiveFloat = 120.0


@lru_cache
def get_settings() -> Settings:
    return Settings()
