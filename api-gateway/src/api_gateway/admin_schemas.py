"""Bodies of the admin API (and of the internal answers it is built from)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from infergate_common.billing import RequestStatus
from infergate_common.validation import Plan
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api_gateway.schemas import MonthlyUsage

# Opaque page cursors of the request log (made by the usage-service).
Cursor = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")
]


class AdminUser(BaseModel):
    """A user: never the key or its hash; `keyPrefix` is null once the key was revoked."""

    userId: str
    email: str
    plan: Plan
    keyPrefix: str | None
    createdAt: datetime


class AdminUserList(BaseModel):
    data: list[AdminUser]
    nextCursor: str | None = Field(
        default=None,
        description="A search's next page: pass it as `cursor` (null on the last page; absent "
        "from an exact `email` lookup).",
    )


class AdminKeyRevoked(BaseModel):
    message: str = "API key revoked"
    userId: str


class PlanChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: Plan


class PlanChanged(BaseModel):
    message: str = "Plan updated"
    userId: str
    plan: Plan
    monthlyLimit: int = Field(description="This month's token quota, effective at once.")
    remainingTokens: int = Field(description="What the next reservation can draw on.")
    requestsPerWindow: int
    windowSeconds: int


class MonthOfUsage(MonthlyUsage):
    period: str


class AdminUsage(BaseModel):
    userId: str
    plan: Plan
    period: str = Field(description="The calendar month (UTC), YYYY-MM.")
    usedTokens: int
    reservedTokens: int = Field(description="Held by requests still running.")
    monthlyLimit: int
    remainingTokens: int = Field(description="monthlyLimit - usedTokens - reservedTokens.")
    percentageUsed: float


class RequestLogItem(BaseModel):
    """One chat attempt (the log never holds prompts or outputs)."""

    requestId: str
    model: str
    status: RequestStatus
    period: str | None = Field(
        default=None, description="The billing month (UTC) the chat belongs to."
    )
    promptTokens: int
    completionTokens: int
    tokensUsed: int
    responseTimeMs: float
    createdAt: datetime = Field(description="When the chat started.")


class RequestHistory(BaseModel):
    data: list[RequestLogItem] = Field(description="Newest first.")
    nextCursor: str | None = Field(description="Pass as `before` for the next (older) page.")
