"""The shapes of usage-service's MongoDB documents, in one place: the month of usage (with its open
reservations) and request-log entries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from usage_service.schemas import RequestLogEntry, UsageRecord

Document = dict[str, Any]
# How many ids of each rare kind one month document keeps (see UsageRepository).
EXPIRED_KEPT = 1000
VOID_KEPT = 100
# The earliest expiry among a month's open reservations (absent when none may be open).
HOLD_UNTIL = "holdUntil"


@dataclass(frozen=True, slots=True)
class Hold:
    """One reservation as the ledger writes it: up to `tokens`, at least `min_tokens`."""

    key: str
    user_id: str
    period: str
    reservation_id: str
    tokens: int
    min_tokens: int
    expires_at: datetime
    # For the request log, should it expire unsettled.
    request_id: str
    model: str
    started_at: datetime

    def entry(self, tokens: int) -> Document:
        """Its element of the month's `open` list."""
        return {
            "rid": self.reservation_id,
            "t": tokens,
            "exp": self.expires_at,
            "req": self.request_id,
            "model": self.model,
            "at": self.started_at,
        }


def new_usage(key: str, *, user_id: str, period: str, limit: int, now: datetime) -> Document:
    return {
        "_id": key,
        "userId": user_id,
        "period": period,
        "monthlyTokenLimit": limit,
        "usedTokens": 0,
        "reservedTokens": 0,
        "remainingTokens": limit,
        "open": [],
        "createdAt": now,
        "updatedAt": now,
    }


def to_record(document: Document) -> UsageRecord:
    return UsageRecord(
        user_id=document["userId"],
        period=document["period"],
        used_tokens=document["usedTokens"],
        reserved_tokens=document["reservedTokens"],
        monthly_limit=document["monthlyTokenLimit"],
        remaining_tokens=document["remainingTokens"],
    )


def log_fields(entry: RequestLogEntry) -> Document:
    """A request-log entry's fields (its `_id` is the attempt's: the reservation id)."""
    fields: Document = {
        "requestId": entry.request_id,
        "userId": entry.user_id,
        "period": entry.period,
        "model": entry.model,
        "promptTokens": entry.prompt_tokens,
        "completionTokens": entry.completion_tokens,
        "tokensUsed": entry.tokens_used,
        "responseTimeMs": entry.response_time_ms,
        "status": entry.status.value,
        "createdAt": entry.created_at,
    }
    if entry.backend is not None:
        fields["backend"] = entry.backend
    return fields


def as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
