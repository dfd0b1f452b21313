"""ai-service settings."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from infergate_common.settings import ServiceSettings
from pydantic import Field, PositiveFloat, PositiveInt, ValidationInfo, field_validator

from ai_service.routing_config import RoutingConfig, load_routing, parse_urls


class Settings(ServiceSettings):
    service_name: str = "ai-service"
    port: int = 4003
    model: str = "llama3"
    # Seconds one model call may take before the caller gets 504 (retry included); also each
    # backend's default timeout.
    ollama_timeout: PositiveFloat = 120.0
    # Where the models are, most specific first: ROUTES_FILE (TOML, per-model backends; see
    # docs/routes.example.toml), else OLLAMA_URLS (comma-separated, each serving every model),
    # else OLLAMA_URL.
    ollama_url: str = "http://127.0.0.1:11434"
    ollama_urls: str = ""
    routes_file: Path | None = None
    # A backend's circuit opens after this many consecutive failures (5xx, timeouts, refused
    # connections); it gets a trial call after the cooldown or as soon as a probe answers.
    backend_failure_threshold: PositiveInt = 3
    backend_cooldown_seconds: PositiveFloat = 10.0
    backend_probe_interval_seconds: PositiveFloat = 2.0
    # Sampling defaults for requests that set none (unset: the model's own defaults).
    default_temperature: float | None = Field(default=None, ge=0, le=2)
    default_seed: int | None = None

    @field_validator("ollama_url", "ollama_urls")
    @classmethod
    def _urls_are_urls(cls, value: str, info: ValidationInfo) -> str:
        if not parse_urls(value) and info.field_name == "ollama_url":
            raise ValueError("an http(s)://host[:port] URL is required")
        return value

    @field_validator("routes_file", mode="before")
    @classmethod
    def _empty_routes_file_is_none(cls, value: object) -> object:
        """ROUTES_FILE= (empty, as compose passes an unset variable) means no file."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("routes_file")
    @classmethod
    def _routes_file_is_valid(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and "ollama_timeout" in info.data and "model" in info.data:
            load_routing(value, timeout=info.data["ollama_timeout"], model=info.data["model"])
        return value

    @property
    def routing(self) -> RoutingConfig:
        """The backends and each model's route, by the precedence above."""
        if self.routes_file is not None:
            return load_routing(self.routes_file, timeout=self.ollama_timeout, model=self.model)
        urls = parse_urls(self.ollama_urls) or parse_urls(self.ollama_url)
        return RoutingConfig.everywhere(urls, timeout=self.ollama_timeout, model=self.model)

    @property
    def shutdown_grace_seconds(self) -> float:
        """A model call in flight may take OLLAMA_TIMEOUT: SIGTERM lets it finish."""
        return self.ollama_timeout + 10


@lru_cache
def get_settings() -> Settings:
    return Settings()
