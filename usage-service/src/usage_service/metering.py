"""Quota decisions: reserve before the model runs, settle after, release what was never settled."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import structlog
from infergate_common.errors import ForbiddenError
from infergate_common.validation import Plan

from usage_service.config import Settings
from usage_service.periods import current_period
from usage_service.repository import RequestLogRepository, UsageRepository
from usage_service.schemas import (
    AttemptLogRequest,
    RequestLogEntry,
    RequestStatus,
    ReserveRequest,
    ReserveResponse,
    SettleRequest,
    SettleResponse,
    UsageRecord,
    UsageResponse,
)

_log = structlog.get_logger("metering")


class Metering:
    def __init__(
        self, *, usage: UsageRepository, logs: RequestLogRepository, settings: Settings
    ) -> None:
        self._usage = usage
        self._logs = logs
        self._settings = settings

    async def reserve(self, body: ReserveRequest) -> ReserveResponse:
        """Hold the request's worst-case tokens, or refuse (403) before the model is called."""
        period = current_period()
        limit = self._settings.monthly_limit(body.plan)
        reservation_id = uuid.uuid4().hex
        record = await self._usage.reserve(
            user_id=body.userId,
            period=period,
            limit=limit,
            reservation_id=reservation_id,
            tokens=body.tokens,
        )
        if record is None:
            _log.info("quota_exceeded", user_id=body.userId, tokens=body.tokens)
            await self._write_log(
                reservation_id,
                _entry(body.requestId, body.userId, body.model, RequestStatus.QUOTA_EXCEEDED),
            )
            raise ForbiddenError("Token quota exceeded", code="quota_exceeded")
        return ReserveResponse(
            reservationId=reservation_id,
            period=period,
            reservedTokens=body.tokens,
            monthlyTokenLimit=record.limit,
            remainingTokens=record.remaining,
        )

    async def settle(self, body: SettleRequest) -> SettleResponse:
        """Charge the actual tokens (never more than reserved) and log the attempt, once."""
        actual = body.promptTokens + body.completionTokens
        charge = min(actual, body.reservedTokens)
        if actual > body.reservedTokens:
            _log.warning("usage_exceeded_reservation", actual=actual, reserved=body.reservedTokens)
        entry = _entry(body.requestId, body.userId, body.model, body.status)
        entry.prompt_tokens, entry.completion_tokens = body.promptTokens, body.completionTokens
        entry.tokens_used, entry.response_time_ms = charge, body.responseTimeMs
        # Two independent writes, both idempotent (the log entry's _id is the reservation's),
        # so they run side by side; if either fails the caller's retry completes the other.
        settled, _ = await asyncio.gather(
            self._usage.settle(
                user_id=body.userId,
                period=body.period,
                reservation_id=body.reservationId,
                reserved=body.reservedTokens,
                charge=charge,
            ),
            self._write_log(body.reservationId, entry),
        )
        if not settled:
            _log.info("settle_repeated_or_expired", reservation_id=body.reservationId)
        # No read of the month here: the caller knows the figures it needs (one round trip less).
        return SettleResponse(settled=settled, chargedTokens=charge)

    async def log_attempt(self, body: AttemptLogRequest) -> None:
        entry = _entry(body.requestId, body.userId, body.model, body.status)
        entry.response_time_ms = body.responseTimeMs
        await self._write_log(uuid.uuid4().hex, entry)

    async def usage(
        self, *, user_id: str, plan: Plan | None, period: str | None = None
    ) -> UsageResponse:
        period = period or current_period()
        record = await self._usage.get(user_id=user_id, period=period)
        if record is None:
            limit = self._settings.monthly_limit(plan or Plan.FREE)
            record = UsageRecord(
                user_id=user_id,
                period=period,
                used_tokens=0,
                reserved_tokens=0,
                monthly_limit=limit,
                remaining_tokens=limit,
            )
        return UsageResponse(
            userId=record.user_id,
            period=record.period,
            usedTokens=record.used_tokens,
            reservedTokens=record.reserved_tokens,
            monthlyTokenLimit=record.monthly_limit,
            remainingTokens=record.remaining_tokens,
        )

    async def change_plan(self, *, user_id: str, plan: Plan) -> UsageResponse:
        """Apply the plan's quota to this month at once (the difference moves the remainder)."""
        period = current_period()
        limit = self._settings.monthly_limit(plan)
        await self._usage.set_limit(user_id=user_id, period=period, limit=limit)
        _log.info("monthly_limit_changed", user_id=user_id, plan=plan.value, limit=limit)
        return await self.usage(user_id=user_id, plan=plan, period=period)

    async def release_expired(self) -> int:
        """Release reservations whose gateway never settled them; returns how many."""
        released = 0
        for entry in await self._usage.expired_reservations(now=datetime.now(UTC)):
            if await self._usage.settle(
                user_id=entry["userId"],
                period=entry["period"],
                reservation_id=entry["rid"],
                reserved=entry["t"],
                charge=0,
            ):
                released += 1
                await self._write_log(
                    entry["rid"],
                    _entry("expired", entry["userId"], "unknown", RequestStatus.EXPIRED),
                )
        if released:
            _log.warning("reservations_released", count=released)
        return released

    async def _write_log(self, attempt_id: str, entry: RequestLogEntry) -> None:
        if not await self._logs.record(attempt_id, entry):
            _log.info("request_log_repeated", attempt_id=attempt_id)


def _entry(request_id: str, user_id: str, model: str, status: RequestStatus) -> RequestLogEntry:
    return RequestLogEntry(
        request_id=request_id,
        user_id=user_id,
        model=model,
        prompt_tokens=0,
        completion_tokens=0,
        tokens_used=0,
        response_time_ms=0.0,
        status=status,
        created_at=datetime.now(UTC),
    )
