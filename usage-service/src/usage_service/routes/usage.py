"""Internal usage routes: reserve, settle, log an attempt, read a user's month."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status
from infergate_common.billing import (
    AttemptLog,
    Reservation,
    ReservationRequest,
    Settlement,
    SettlementBatch,
    SettlementResult,
    SettlementResults,
)
from infergate_common.errors import error_responses
from infergate_common.validation import Plan, UserId

from usage_service.deps import MeteringDep, RequestLogsDep
from usage_service.history import history_page
from usage_service.schemas import (
    PlanChangeRequest,
    RequestHistory,
    UsageResponse,
)

router = APIRouter(prefix="/usage", tags=["usage"])


@router.post(
    "/reserve",
    status_code=status.HTTP_201_CREATED,
    response_model=Reservation,
    response_model_by_alias=True,
    responses=error_responses(403, 409),
)
async def reserve(body: ReservationRequest, metering: MeteringDep) -> Reservation:
    """Hold tokens before a model call (idempotent by reservation id); 403 when this month's
    quota cannot cover even the request's minimum."""
    return await metering.reserve(body)


@router.post("/settle", response_model=SettlementResult, response_model_by_alias=True)
async def settle(body: Settlement, metering: MeteringDep) -> SettlementResult:
    """Apply one reservation's outcome: charge it, or release it (at most once, idempotent)."""
    return await metering.settle(body)


@router.post("/settlements", response_model=SettlementResults, response_model_by_alias=True)
async def settle_many(body: SettlementBatch, metering: MeteringDep) -> SettlementResults:
    """Apply several outcomes at once (each at most once); the result of each, in order."""
    results = await asyncio.gather(*(metering.settle(s) for s in body.settlements))
    return SettlementResults(results=list(results))


@router.post("/attempts", status_code=status.HTTP_201_CREATED)
async def log_attempt(body: AttemptLog, metering: MeteringDep) -> dict[str, str]:
    """Log a chat attempt that never reached a reservation (for example rate limited)."""
    await metering.log_attempt(body, uuid.uuid4().hex)
    return {"message": "Logged"}


@router.get("/{user_id}", response_model=UsageResponse)
async def get_usage(
    user_id: UserId, metering: MeteringDep, plan: Plan = Plan.FREE
) -> UsageResponse:
    """This month's usage of one user (a user with no usage yet has used nothing)."""
    return await metering.usage(user_id=user_id, plan=plan)


@router.put("/{user_id}/plan", response_model=UsageResponse)
async def change_plan(
    user_id: UserId, body: PlanChangeRequest, metering: MeteringDep
) -> UsageResponse:
    """Apply a new plan's monthly quota to this month (limit and remainder move together)."""
    return await metering.change_plan(user_id=user_id, plan=body.plan)


@router.get(
    "/{user_id}/requests",
    response_model=RequestHistory,
    responses=error_responses(400),
)
async def request_history(
    user_id: UserId,
    logs: RequestLogsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> RequestHistory:
    """One user's request log, newest first; `nextCursor` continues with older entries."""
    return await history_page(logs, user_id=user_id, limit=limit, before=before)
