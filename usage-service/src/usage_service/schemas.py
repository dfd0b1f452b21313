"""Request and response bodies of the usage-service's internal API, and its documents."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from infergate_common.validation import Plan, RequestId, UserId
from pydantic import BaseModel, ConfigDict, Field, Strict

Model = Annotated[str, Field(min_length=1, max_length=200)]
Period = Annotated[str, Field(pattern=r"^\d{4}-\d{2}$")]
ReservationId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
# Strict: a count is a JSON integer, never a string, a float or a boolean that lax mode coerces.
Millis = Annotated[float, Strict(), Field(ge=0, le=86_400_000)]
TokenCount = Annotated[int, Strict(), Field(ge=0, le=10_000_000)]
ReservedTokens = Annotated[int, Strict(), Field(ge=1, le=10_000_000)]


class RequestStatus(StrEnum):
    SUCCESS = "SUCCESS"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    RATE_LIMITED = "RATE_LIMITED"
    TIMEOUT = "TIMEOUT"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReserveRequest(StrictBody):
    requestId: RequestId
    userId: UserId
    plan: Plan
    tokens: ReservedTokens
    model: Model


class ReserveResponse(BaseModel):
    reservationId: str
    period: str
    reservedTokens: int
    monthlyTokenLimit: int
    remainingTokens: int


class SettleRequest(StrictBody):
    reservationId: ReservationId
    requestId: RequestId
    userId: UserId
    period: Period
    reservedTokens: ReservedTokens
    promptTokens: TokenCount = 0
    completionTokens: TokenCount = 0
    status: RequestStatus
    model: Model
    responseTimeMs: Millis


class SettleResponse(BaseModel):
    settled: bool  # False: already settled (a retry) or already released
    chargedTokens: int


class AttemptLogRequest(StrictBody):
    """A chat attempt that never reached a reservation (rate limited)."""

    requestId: RequestId
    userId: UserId
    status: RequestStatus
    model: Model
    responseTimeMs: Millis


class UsageResponse(BaseModel):
    userId: str
    period: str
    usedTokens: int
    reservedTokens: int
    monthlyTokenLimit: int
    remainingTokens: int


class PlanChangeRequest(StrictBody):
    plan: Plan


class RequestHistoryItem(BaseModel):
    """One logged attempt as operators see it (the log never holds prompts or outputs)."""

    requestId: str
    model: str
    status: RequestStatus
    promptTokens: int
    completionTokens: int
    tokensUsed: int
    responseTimeMs: float
    createdAt: datetime


class RequestHistory(BaseModel):
    data: list[RequestHistoryItem]
    nextCursor: str | None = Field(description="Pass as `before` for the next (older) page.")


class UsageRecord(BaseModel):
    """One user's usage for one calendar month (UTC)."""

    user_id: str
    period: str
    used_tokens: int
    reserved_tokens: int
    monthly_limit: int
    remaining_tokens: int


class RequestLogEntry(BaseModel):
    request_id: str
    user_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    tokens_used: int
    response_time_ms: float
    status: RequestStatus
    created_at: datetime
