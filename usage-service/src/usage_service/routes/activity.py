"""Internal usage reports for the gateway: per-day usage (one user's or everyone's) and the
month's top users. Registered before the per-user routes, whose `/usage/{user_id}` would
otherwise take `/usage/daily` and `/usage/top`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from infergate_common.errors import error_responses
from infergate_common.usage_reports import DailyUsage, TopUsers
from infergate_common.validation import Period, UserId

from usage_service.deps import ReportsDep

router = APIRouter(prefix="/usage", tags=["reports"], responses=error_responses(400))
PeriodQuery = Annotated[Period | None, Query(description="YYYY-MM; this month by default.")]


@router.get("/daily", response_model=DailyUsage)
async def daily_totals(reports: ReportsDep, period: PeriodQuery = None) -> DailyUsage:
    """Every user's requests, tokens, errors and refusals per day (UTC) of the month so far."""
    return await reports.daily(period=period)


@router.get("/top", response_model=TopUsers)
async def top_users(
    reports: ReportsDep,
    period: PeriodQuery = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> TopUsers:
    """The users charged the most tokens in the month (the ledger), with their request counts."""
    return await reports.top_users(period=period, limit=limit)


@router.get("/{user_id}/daily", response_model=DailyUsage)
async def daily_of_user(
    user_id: UserId, reports: ReportsDep, period: PeriodQuery = None
) -> DailyUsage:
    """One user's requests, tokens, errors and refusals per day (UTC) of the month so far."""
    return await reports.daily(period=period, user_id=user_id)
