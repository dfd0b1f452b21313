"""Quota alerts by webhook: the shapes the gateway and usage-service share (one owner).

A user registers one webhook (a URL and the percentages of the month's quota to be told about);
usage-service signs and sends one `quota.threshold_crossed` event per threshold, user and month,
and keeps a delivery log. snake_case in Python, camelCase on the wire (see `WireModel`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, Strict, field_validator

from infergate_common.billing import WireModel

EVENT_TYPE = "quota.threshold_crossed"
DEFAULT_THRESHOLDS = (80, 100)
# A percentage of the month's quota: a JSON integer from 1 to 100.
Threshold = Annotated[int, Strict(), Field(ge=1, le=100)]
WebhookUrl = Annotated[
    str,
    Field(min_length=1, max_length=2048, description="http(s) URL the events are POSTed to."),
]


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # not delivered yet: an attempt is due, or in progress
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # gave up: no 2xx within the maximum age (or the webhook was removed)


class WebhookSettings(WireModel):
    """The body of `PUT /v1/webhook`."""

    url: WebhookUrl
    thresholds: list[Threshold] = Field(
        default=list(DEFAULT_THRESHOLDS),
        min_length=1,
        max_length=10,
        description="Percentages (1-100) of the month's quota; one event as each is reached.",
    )

    @field_validator("thresholds")
    @classmethod
    def _sorted_once(cls, value: list[int]) -> list[int]:
        return sorted(set(value))


class Webhook(WireModel):
    """A user's webhook. `secret` (the signing key, `whsec_...`) only in the answer that made
    it: the first `PUT` and each rotation."""

    url: str
    thresholds: list[int]
    secret: str | None = Field(default=None, description="Shown once: keep it.")
    created_at: datetime
    updated_at: datetime


class Attempt(WireModel):
    """One delivery attempt: the answer's status, or why there was none."""

    at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: float


class Delivery(WireModel):
    """One event in the delivery log."""

    event_id: str
    type: str
    period: str
    threshold: int
    status: DeliveryStatus
    attempts: int = Field(description="Attempts started so far.")
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = Field(
        default=None, description="When the next attempt is due (pending events only)."
    )
    history: list[Attempt] = Field(description="The latest attempts, oldest first.")
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None = None


class Deliveries(WireModel):
    data: list[Delivery] = Field(description="Newest first.")
