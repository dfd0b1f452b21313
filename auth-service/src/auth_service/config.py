"""auth-service settings."""

from __future__ import annotations

from functools import lru_cache

from infergate_common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "auth-service"
    port: int = 4001
    mongo_uri: str = "mongodb://127.0.0.1:27017/infergate-auth?directConnection=true"
    mongo_timeout_ms: int = 2000


@lru_cache
def get_settings() -> Settings:
    return Settings()
