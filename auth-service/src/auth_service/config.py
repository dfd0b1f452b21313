"""auth-service settings."""

from __future__ import annotations

from functools import lru_cache

from infergate_common.settings import ServiceSettings
from pydantic import SecretStr, field_validator


class Settings(ServiceSettings):
    service_name: str = "auth-service"
    port: int = 4001
    mongo_uri: str = "mongodb://127.0.0.1:27017/infergate-auth?directConnection=true"
    mongo_timeout_ms: int = 2000
    # Derives the key an idempotent register or rotate issues, so that a retry with the same
    # Idempotency-Key gets the same key without any key being stored (auth-service only).
    key_derivation_secret: SecretStr

    @field_validator("key_derivation_secret")
    @classmethod
    def _secret_is_long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("KEY_DERIVATION_SECRET must be at least 32 characters")
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
