"""The settings base every service extends: read once from the environment, overridable in tests."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogFormat = Literal["auto", "json", "console"]


class ServiceSettings(BaseSettings):
    """Fields every service has. Environment variable names are the field names upper-cased."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    service_name: str
    log_level: str = "info"
    log_format: LogFormat = "auto"
    host: str = "127.0.0.1"
    port: int
    # Shared secret the internal services require on every call (header x-internal-token).
    internal_token: SecretStr
    # Prometheus metrics at GET /metrics; false: nothing is recorded and /metrics is a 404.
    metrics_enabled: bool = True

    @field_validator("internal_token")
    @classmethod
    def _token_is_long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("INTERNAL_TOKEN must be at least 16 characters")
        return value

    @property
    def shutdown_grace_seconds(self) -> float:
        """How long a SIGTERM lets requests in flight finish before they are cancelled (a service
        whose requests may take longer raises it)."""
        return 30.0

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError(f"unknown LOG_LEVEL {value!r}")
        return level
