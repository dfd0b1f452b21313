"""api-gateway settings (environment variable names follow the original compose file)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Literal, Self
from urllib.parse import unquote, urlsplit

from infergate_common.settings import ServiceSettings
from infergate_common.validation import Plan
from pydantic import Field, PositiveFloat, PositiveInt, SecretStr, field_validator, model_validator


class RedisMode(StrEnum):
    STANDALONE = "standalone"  # one server
    CLUSTER = "cluster"  # a Redis Cluster, found from one seed node
    SENTINEL = "sentinel"  # the primary that Sentinels name, followed through failovers


@dataclass(frozen=True, slots=True)
class RedisEndpoint:
    """How to reach Redis: a server (standalone), a seed node (cluster), or only the credentials,
    database and TLS to use on the primary the Sentinels name (sentinel)."""

    host: str
    port: int
    username: str | None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    tls: bool = False


class CacheHitCharge(StrEnum):
    NONE = "none"  # a cached answer is free (logged with its counts, charged 0)
    FULL = "full"  # charged its counts, like the answer it repeats


class Settings(ServiceSettings):
    service_name: str = "api-gateway"
    port: int = 4000
    auth_service_url: str = "http://127.0.0.1:4001"
    usage_service_url: str = "http://127.0.0.1:4002"
    ai_service_url: str = "http://127.0.0.1:4003"
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    # Redis' ACL user and password (empty: none); REDIS_URL's own credentials take precedence.
    redis_username: str = ""
    redis_password: SecretStr = SecretStr("")
    redis_timeout: PositiveFloat = 0.5
    # redis://[user:password@]host[:port][/db], or rediss:// for TLS; overrides REDIS_HOST/PORT.
    redis_url: SecretStr = SecretStr("")
    # standalone, cluster (REDIS_URL or REDIS_HOST/PORT is a seed node) or sentinel.
    redis_mode: RedisMode = RedisMode.STANDALONE
    # Sentinel mode: the Sentinels (comma-separated host:port), the name they monitor the primary
    # by, and the Sentinels' own password (empty: none).
    redis_sentinels: str = ""
    redis_sentinel_master: str = "infergate"
    redis_sentinel_password: SecretStr = SecretStr("")
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
    # How long a recorded settlement may wait for others to be delivered with it (one call to
    # usage-service and one database write for several chats; 0: each at once). A read of the
    # user's own usage does not wait for it.
    settlement_batch_ms: Annotated[int, Field(ge=0, le=1_000)] = 0

    # The response cache (Redis): how long an answer is kept (0: off, the default), what a hit is
    # charged, whether it caches every request (default: only deterministic ones, temperature 0
    # or a seed) and shares answers between users (default: each user has their own), and its
    # size bounds (entries over all users, bytes per answer).
    cache_ttl_seconds: Annotated[int, Field(ge=0, le=30 * 86_400)] = 0
    cache_hit_charge: CacheHitCharge = CacheHitCharge.NONE
    cache_all_requests: bool = False
    cache_shared: bool = False
    cache_max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    cache_max_entry_bytes: Annotated[int, Field(ge=256, le=16 * 1024 * 1024)] = 32_768
    # A plain (not streamed) chat's model call starts while its tokens are being reserved when
    # the user's last reservation through this gateway (at most EARLY_MODEL_CALL_SECONDS ago)
    # left at least EARLY_MODEL_CALL_MARGIN times the chat's worst case; the answer is still
    # released only once the reservation is granted (refused: the call is cancelled, 403).
    early_model_call: bool = True
    early_model_call_margin: Annotated[int, Field(ge=1, le=1_000)] = 4
    early_model_call_seconds: Annotated[int, Field(ge=1, le=86_400)] = 600

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

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_valid(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value():
            _parse_redis_url(value.get_secret_value())
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_are_addresses(cls, value: str) -> str:
        _parse_addresses(value)
        return value

    @model_validator(mode="after")
    def _redis_mode_has_what_it_needs(self) -> Self:
        if self.redis_mode is RedisMode.SENTINEL and not self.sentinel_addresses:
            raise ValueError(
                "REDIS_SENTINELS (comma-separated host:port of the Sentinels) is required "
                "when REDIS_MODE is sentinel"
            )
        if self.redis_mode is RedisMode.CLUSTER and self.redis_endpoint.db != 0:
            raise ValueError("REDIS_URL names a database: a Redis Cluster has only database 0")
        return self

    @property
    def redis_endpoint(self) -> RedisEndpoint:
        """REDIS_URL if set, else REDIS_HOST and REDIS_PORT; REDIS_USERNAME and REDIS_PASSWORD
        when the URL carries no credentials."""
        username = self.redis_username or None
        password = self.redis_password.get_secret_value() or None
        url = self.redis_url.get_secret_value()
        if not url:
            return RedisEndpoint(self.redis_host, self.redis_port, username, password)
        parsed = _parse_redis_url(url)
        if parsed.username is None and parsed.password is None:
            return RedisEndpoint(
                parsed.host, parsed.port, username, password, db=parsed.db, tls=parsed.tls
            )
        return parsed

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return _parse_addresses(self.redis_sentinels)

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


def _parse_redis_url(url: str) -> RedisEndpoint:
    # The errors name the variable and repeat nothing of the URL: it may carry a password.
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("REDIS_URL must start with redis:// or rediss:// (TLS)")
    if parts.query or parts.fragment:
        raise ValueError("REDIS_URL takes no query options (only user, password, host, port, db)")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("REDIS_URL has an invalid port") from None
    if not parts.hostname:
        raise ValueError("REDIS_URL names no host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError("REDIS_URL's path must be a database number (redis://host:port/0)")
    return RedisEndpoint(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        db=int(path or 0),
        tls=parts.scheme == "rediss",
    )


def _parse_addresses(value: str) -> list[tuple[str, int]]:
    addresses = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"REDIS_SENTINELS must be comma-separated host:port, not {item!r}")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


@lru_cache
def get_settings() -> Settings:
    return Settings()
