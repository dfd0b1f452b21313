"""ai-service settings."""

from __future__ import annotations

from functools import lru_cache

from infergate_common.settings import ServiceSettings
from pydantic import Field, PositiveFloat


class Settings(ServiceSettings):
    service_name: str = "ai-service"
    port: int = 4003
    ollama_url: str = "http://127.0.0.1:11434"
    model: str = "llama3"
    # Seconds one model call may take before the caller gets 504.
    ollama_timeout: PositiveFloat = 120.0
    # Sampling defaults for requests that set none (unset: the model's own defaults).
    default_temperature: float | None = Field(default=None, ge=0, le=2)
    default_seed: int | None = None

    @property
    def shutdown_grace_seconds(self) -> float:
        """A model call in flight may take OLLAMA_TIMEOUT: SIGTERM lets it finish."""
        return self.ollama_timeout + 10


@lru_cache
def get_settings() -> Settings:
    return Settings()
