"""Your own activity, for the web console: usage per day and your request log.

Reads like /v1/usage: they wait for this gateway's settlements of your chats to be applied (so the
last chat shows), do not count against the rate limit, and carry the rate-limit headers (the
window peeked at, the month's tokens)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from infergate_common.errors import error_responses
from infergate_common.usage_reports import DailyUsage

from api_gateway.admin_schemas import Cursor, RequestHistory
from api_gateway.deps import AccountViewDep, CurrentUser, PeriodQuery

router = APIRouter(tags=["public"])
_ERRORS = error_responses(400, 401, 503, 504)


@router.get("/v1/usage/daily", response_model=DailyUsage, responses=_ERRORS)
async def usage_per_day(
    user: CurrentUser, view: AccountViewDep, period: PeriodQuery = None
) -> DailyUsage:
    """Your requests, tokens, errors and refusals per day (UTC) of this month (or `period`):
    every day up to today, zero-filled. `errors` are attempts the service failed (timeouts,
    model errors); `refused` are those your rate limit or quota refused."""
    await view.settled(user)
    daily, _ = await asyncio.gather(
        view.usage.daily(user.userId, period=period), view.show_limits(user)
    )
    return daily


@router.get("/v1/requests", response_model=RequestHistory, responses=_ERRORS)
async def your_requests(
    user: CurrentUser,
    view: AccountViewDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[Cursor | None, Query()] = None,
) -> RequestHistory:
    """Your request log, newest first, `limit` a page; pass `nextCursor` as `before` for the next
    (older) page. Token counts, status and timing only: prompts and outputs are never kept."""
    await view.settled(user)
    history, _ = await asyncio.gather(
        view.usage.history(user.userId, limit=limit, before=before), view.show_limits(user)
    )
    return history
