"""The admin API: find users, change their plan, replace or revoke their key, read their usage
and request history, and everyone's usage per day and the month's top users.

Mounted only when ADMIN_TOKEN is set, and never routed by nginx: operators call a gateway
directly. Plan limits stay configuration (FREE_*/PRO_* settings); only the user's plan changes.
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Query
from infergate_common.errors import BadRequestError, error_responses
from infergate_common.usage_reports import DailyUsage, TopUsers
from infergate_common.validation import Text, UserId, normalize_email

from api_gateway.admin_auth import require_admin
from api_gateway.admin_schemas import (
    AdminKeyRevoked,
    AdminUsage,
    AdminUser,
    AdminUserList,
    Cursor,
    PlanChange,
    PlanChanged,
    RequestHistory,
)
from api_gateway.deps import AuthClientDep, KeysDep, PeriodQuery, SettingsDep, UsageClientDep
from api_gateway.schemas import IssuedKey

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=error_responses(401, 404, 503, 504),
)
_log = structlog.get_logger("admin")


@router.get(
    "/users",
    response_model=AdminUserList,
    # An exact lookup answers `{"data": [...]}` as it always did; a search adds `nextCursor`.
    response_model_exclude_unset=True,
    responses=error_responses(400),
)
async def find_users(
    auth: AuthClientDep,
    email: Annotated[str | None, Query(min_length=1, max_length=254)] = None,
    search: Annotated[
        Text | None,
        Query(
            max_length=254,
            description="The start of the email, in any case; empty: every user. A prefix, not "
            "a substring: a prefix is a range of the email index, a substring would read every "
            "user.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
) -> AdminUserList:
    """The user with this `email` (at most one: emails are unique, compared lower-cased), or a
    page of the users whose email starts with `search`, ordered by email; pass `nextCursor` as
    `cursor` for the next page."""
    if (email is None) == (search is None):
        raise BadRequestError(
            "Give either email (one user) or search (a page of users; empty for all)",
            code="validation_error",
        )
    if search is not None:
        return await auth.search_users(search, limit=limit, cursor=cursor)
    try:
        normalized = normalize_email(email or "")
    except ValueError:
        raise BadRequestError("A valid email is required", code="validation_error") from None
    return AdminUserList(data=await auth.users_by_email(normalized))


@router.get("/users/{user_id}", response_model=AdminUser)
async def get_user(user_id: UserId, auth: AuthClientDep) -> AdminUser:
    """One user, by id."""
    return await auth.user(user_id)


@router.put("/users/{user_id}/plan", response_model=PlanChanged)
async def set_plan(
    user_id: UserId,
    body: PlanChange,
    auth: AuthClientDep,
    usage: UsageClientDep,
    keys: KeysDep,
    settings: SettingsDep,
) -> PlanChanged:
    """Move a user to FREE or PRO: the plan's request and token limits apply to the next request.

    Idempotent: repeat it if it failed halfway (the quota moves by the difference only once)."""
    change, user = await auth.set_plan(user_id, body.plan)
    try:
        month = await usage.set_plan(user_id, body.plan)
    finally:
        # The plan changed in auth-service whatever usage-service answered: every replica
        # verifies the user's key afresh on its next request (the new plan applies).
        await keys.announce(change)
    _log.info("plan_changed", user_id=user_id, plan=user.plan.value)
    return PlanChanged(
        userId=user_id,
        plan=user.plan,
        monthlyLimit=month.monthlyTokenLimit,
        remainingTokens=month.remainingTokens,
        requestsPerWindow=settings.rate_limit(user.plan),
        windowSeconds=settings.rate_limit_window,
    )


@router.post("/users/{user_id}/key", response_model=IssuedKey)
async def issue_key(user_id: UserId, keys: KeysDep) -> IssuedKey:
    """Give a user a new API key (shown once), whatever their current one: the way back for a
    user whose key was lost or revoked. Their previous key stops working on every replica."""
    return await keys.issue(user_id)


@router.delete("/users/{user_id}/key", response_model=AdminKeyRevoked)
async def revoke_key(user_id: UserId, auth: AuthClientDep, keys: KeysDep) -> AdminKeyRevoked:
    """Revoke a user's API key without knowing it: it stops working on every replica (the
    user's new version is announced as for every key change). `POST .../key` issues a new one."""
    change = await auth.revoke_key_of(user_id)
    await keys.announce(change)
    _log.info("api_key_revoked_by_operator", user_id=user_id)
    return AdminKeyRevoked(userId=user_id)


@router.get("/users/{user_id}/usage", response_model=AdminUsage)
async def user_usage(user_id: UserId, auth: AuthClientDep, usage: UsageClientDep) -> AdminUsage:
    """This calendar month's (UTC) token figures of one user."""
    user = await auth.user(user_id)
    month = await usage.month_of(user_id, user.plan)
    limit = month.monthlyTokenLimit
    return AdminUsage(
        userId=user_id,
        plan=user.plan,
        period=month.period,
        usedTokens=month.usedTokens,
        reservedTokens=month.reservedTokens,
        monthlyLimit=limit,
        remainingTokens=month.remainingTokens,
        percentageUsed=round(month.usedTokens / limit * 100, 2) if limit else 0.0,
    )


@router.get("/users/{user_id}/requests", response_model=RequestHistory)
async def user_requests(
    user_id: UserId,
    auth: AuthClientDep,
    usage: UsageClientDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[Cursor | None, Query()] = None,
) -> RequestHistory:
    """One user's request log, newest first, `limit` a page; pass `nextCursor` as `before` for
    the next page. Token counts, status and timing only: prompts and outputs are never kept."""
    await auth.user(user_id)  # 404 for an unknown user, rather than an empty history
    return await usage.history(user_id, limit=limit, before=before)


@router.get("/usage/daily", response_model=DailyUsage, responses=error_responses(400))
async def usage_per_day(usage: UsageClientDep, period: PeriodQuery = None) -> DailyUsage:
    """Every user's requests, tokens, errors and refusals per day (UTC) of the month so far; a
    day's error rate is `errors / requests`."""
    return await usage.daily_totals(period=period)


@router.get("/usage/top", response_model=TopUsers, responses=error_responses(400))
async def top_users(
    usage: UsageClientDep,
    period: PeriodQuery = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> TopUsers:
    """The users charged the most tokens in the month (from the ledger), with how many requests
    each made."""
    return await usage.top_users(period=period, limit=limit)
