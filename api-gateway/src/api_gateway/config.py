"""api-gateway settings (environment variable names follow the original compose file)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Annotated, Literal

from infergate_common.settings import ServiceSettings
from infergate_common.validation import Plan
from pydantic import Field, PositiveFloat, PositiveInt, SecretStr, field_validator


class Settings(ServiceSettings):
    service_name: str = "api-gateway"
    port: int = 4000
    auth_service_url: str = "http://127.0.0.1:4001"
    usage_service_url: str = "http://127.0.0.1:4002"
    ai_service_url: str = "http://127.0.0.1:4003"
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    # Redis' ACL user and password (empty: none).
    redis_username: str = ""
    redis_password: SecretStr = SecretStr("")
    redis_timeout: PositiveFloat = 0.5
    # Per-call timeouts: auth and usage are quick lookups; the model may take minutes.
    auth_timeout: PositiveFloat = 3.0
    usage_timeout: PositiveFloat = 3.0
    ai_timeout: PositiveFloat = 130.0
    free_rate_limit: PositiveInt = 10
    pro_rate_limit: PositiveInt = 100
    rate_limit_window: PositiveInt = 60
    rate_limit_failure_mode: Literal["open", "closed"] = "open"
    registration_rate_limit: PositiveInt = 5
    registration_rate_window: PositiveInt = 3600
    # Failed authentications (unknown or malformed keys) per client network (an IPv4 address, an
    # IPv6 /64) per window; over it, 429 before auth-service is asked again.
    auth_failure_rate_limit: PositiveInt = 60
    auth_failure_rate_window: PositiveInt = 60
    # How often each gateway reads auth-service's stamped key and plan changes (the durable path
    # by which a revocation reaches it even if the gateway that made it died before announcing).
    key_changes_seconds: PositiveFloat = 1.0
    model: str = "llama3"
    # Comma-separated models a request may choose (empty: only MODEL).
    models: str = ""
    max_output_tokens: PositiveInt = 512
    max_prompt_chars: PositiveInt = 32_000
    # The LLM path's circuit breaker: opens after this many consecutive failures.
    circuit_failure_threshold: PositiveInt = 5
    circuit_cooldown_seconds: PositiveFloat = 30.0
    # Chat-template tokens added around a prompt; part of the worst-case reservation.
    prompt_token_overhead: PositiveInt = 64
    # How long a verified key may be reused without asking auth-service again (0: never). Each
    # use is checked against the user's version in Redis, so rotations, revocations and plan
    # changes apply at once on every replica; this only bounds how long one whose announcement
    # was lost (Redis unreachable at that moment) can be missed.
    key_cache_seconds: Annotated[float, Field(ge=0, le=3600)] = 300.0
    # Enables the admin API (/admin/...) when set; callers send it as a Bearer token or in
    # x-admin-token. Empty: the admin routes do not exist (404).
    admin_token: SecretStr = SecretStr("")

    # The settlement outbox (Redis): how long the gateway that recorded a settlement has to
    # deliver it before any gateway may (also the interval between retries while usage-service
    # or the database is down), and how often each gateway claims the settlements that are due.
    settlement_retry_seconds: PositiveFloat = 5.0
    settlement_claim_seconds: PositiveFloat = 1.0

    @property
    def chat_deadline_seconds(self) -> int:
        """The longest a chat may take from its reservation to its recorded settlement: how long
        its reservation is held, and how long after its first output a stream is charged in
        full if its gateway never finished it."""
        return math.ceil(self.usage_timeout + self.ai_timeout + 4 * self.redis_timeout + 5)

    @property
    def shutdown_grace_seconds(self) -> float:
        """SIGTERM lets every chat in flight finish and settle (the longest may take the whole
        chat deadline), then delivers what is queued."""
        return self.chat_deadline_seconds + 2 * self.usage_timeout

    @field_validator("admin_token")
    @classmethod
    def _admin_token_is_long_enough(cls, value: SecretStr) -> SecretStr:
        if 0 < len(value.get_secret_value()) < 16:
            raise ValueError("ADMIN_TOKEN must be empty (admin API off) or at least 16 characters")
        return value

    @property
    def admin_enabled(self) -> bool:
        return bool(self.admin_token.get_secret_value())

    @property
    def allowed_models(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()] or [self.model]

    def rate_limit(self, plan: Plan) -> int:
        return self.pro_rate_limit if plan is Plan.PRO else self.free_rate_limit


@lru_cache
def get_settings() -> Settings:
    return Settings()
