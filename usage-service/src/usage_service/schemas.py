"""usage-service's own bodies and records (the reservation and settlement contract it shares with
the gateway is `infergate_common.billing`)."""

from __future__ import annotations

from datetime import datetime

from infergate_common.billing import RequestStatus
from infergate_common.validation import Plan
from pydantic import BaseModel, ConfigDict, Field


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    period: str | None = Field(
        default=None,
        description="The billing month (UTC) the chat belongs to (none before it was logged).",
    )
    promptTokens: int
    completionTokens: int
    tokensUsed: int
    responseTimeMs: float
    createdAt: datetime = Field(description="When the chat started.")


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
    period: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_used: int = 0
    response_time_ms: float = 0.0
    status: RequestStatus
    created_at: datetime
    backend: str | None = None
