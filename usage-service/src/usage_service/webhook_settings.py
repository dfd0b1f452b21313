"""The operator's settings of quota alerts by webhook (part of usage-service's `Settings`).

QUOTA_WEBHOOK_URL / QUOTA_WEBHOOK_SECRET / QUOTA_WEBHOOK_THRESHOLDS: a global webhook that
receives every user's crossings too (thresholds comma-separated, default 80,100).
QUOTA_WEBHOOK_ALLOW_PRIVATE / QUOTA_WEBHOOK_ALLOWED_HOSTS: see webhook_urls.
The rest tune delivery: the timeout of one attempt, the base of the retry backoff (doubling, with
jitter, up to an hour between attempts), how long an event is retried before it is failed, how
often the delivery queue is polled and how often the recovery sweep runs (see quota_alert_sweep).
"""

from __future__ import annotations

from typing import Annotated, Self

from infergate_common.webhooks import DEFAULT_THRESHOLDS, Threshold
from pydantic import Field, PositiveFloat, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from usage_service.webhook_signing import signing_key
from usage_service.webhook_urls import AddressPolicy, RefusedUrlError, parse_url


def _comma_separated(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class QuotaWebhookSettings(BaseSettings):
    # A refused setting is reported without the values given (they include secrets).
    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    quota_webhook_url: str | None = None
    quota_webhook_secret: SecretStr | None = None
    quota_webhook_thresholds: Annotated[
        list[Threshold], NoDecode, Field(min_length=1, max_length=10)
    ] = list(DEFAULT_THRESHOLDS)
    quota_webhook_allow_private: bool = False
    quota_webhook_allowed_hosts: Annotated[list[str], NoDecode] = []
    quota_webhook_timeout_seconds: PositiveFloat = 5.0
    quota_webhook_retry_seconds: PositiveFloat = 5.0
    quota_webhook_max_age_seconds: PositiveFloat = 86_400.0
    quota_webhook_poll_seconds: PositiveFloat = 1.0
    quota_webhook_sweep_seconds: PositiveFloat = 60.0

    @field_validator("quota_webhook_thresholds", mode="before")
    @classmethod
    def _thresholds(cls, value: object) -> object:
        parts = _comma_separated(value)
        if isinstance(parts, list):
            return [int(part) if isinstance(part, str) else part for part in parts]
        return parts

    @field_validator("quota_webhook_allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        return _comma_separated(value)

    @field_validator("quota_webhook_url", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _global_webhook_is_usable(self) -> Self:
        _ = self.webhook_policy  # refuses a malformed QUOTA_WEBHOOK_ALLOWED_HOSTS
        if self.quota_webhook_url is None:
            return self
        try:
            parse_url(self.quota_webhook_url)  # http(s), no credentials
        except RefusedUrlError as exc:
            raise ValueError(f"QUOTA_WEBHOOK_URL: {exc.message}") from None
        if self.quota_webhook_secret is None:
            raise ValueError("QUOTA_WEBHOOK_URL needs QUOTA_WEBHOOK_SECRET to sign its events")
        signing_key(self.quota_webhook_secret.get_secret_value())
        return self

    @property
    def webhook_policy(self) -> AddressPolicy:
        return AddressPolicy.of(
            allow_private=self.quota_webhook_allow_private,
            allowed_hosts=self.quota_webhook_allowed_hosts,
        )

    @property
    def webhook_thresholds(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.quota_webhook_thresholds)))
