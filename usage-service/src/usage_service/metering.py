"""Quota decisions: reserve before the model runs, settle after, release what was never settled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from infergate_common.billing import (
    AttemptLog,
    RequestStatus,
    Reservation,
    ReservationRequest,
    Settlement,
    SettlementOutcome,
    SettlementResult,
)
from infergate_common.errors import BadRequestError, ConflictError, ForbiddenError
from infergate_common.validation import Plan

from usage_service.config import Settings
from usage_service.documents import Hold, new_usage
from usage_service.expiry import OpenReservation, ReservationExpiry
from usage_service.periods import current_period, usage_key
from usage_service.request_log import RequestLogRepository
from usage_service.schemas import RequestLogEntry, UsageRecord, UsageResponse
from usage_service.telemetry import UsageMetrics
from usage_service.usage_repository import Granted, Refused, UsageRepository

_log = structlog.get_logger("metering")
Clock = Callable[[], datetime]
# A reservation's chat must have started about now (by this service's clock): its month is the
# one of its start, and a gateway whose clock is far off must not pick another month's quota.
_CLOCK_SKEW = timedelta(minutes=5)
_SWEEP_PAGE = 100
_SWEEP_PAGES = 100  # at most this many pages per pass (10,000 months)


class ChargeObserver(Protocol):
    """Told of each settlement that charged tokens, on the request path: must not block
    (quota_alerts.QuotaAlerts only marks the month in memory)."""

    def charged(self, user_id: str, period: str) -> None: ...


class Metering:
    def __init__(
        self,
        *,
        usage: UsageRepository,
        expiry: ReservationExpiry,
        logs: RequestLogRepository,
        settings: Settings,
        clock: Clock = lambda: datetime.now(UTC),
        metrics: UsageMetrics | None = None,
        observer: ChargeObserver | None = None,
    ) -> None:
        self._metrics = metrics
        self._observer = observer
        self._usage = usage
        self._expiry = expiry
        self._logs = logs
        self._settings = settings
        self._clock = clock

    async def reserve(self, body: ReservationRequest) -> Reservation:
        """Hold the chat's worst case, or what is left if that covers its minimum; else 403."""
        now = self._clock()
        if abs(body.started_at - now) > _CLOCK_SKEW:
            raise BadRequestError("startedAt is not about now", code="invalid_start")
        hold = Hold(
            key=usage_key(body.user_id, body.period),
            user_id=body.user_id,
            period=body.period,
            reservation_id=body.reservation_id,
            tokens=body.tokens,
            min_tokens=body.min_tokens,
            expires_at=now + timedelta(seconds=self._hold_seconds(body.hold_seconds)),
            request_id=body.request_id,
            model=body.model,
            started_at=body.started_at,
        )
        outcome = await self._usage.reserve(hold, limit=self._settings.monthly_limit(body.plan))
        if isinstance(outcome, Refused):
            await self._refuse(body, outcome)
        assert isinstance(outcome, Granted)
        return Reservation(
            reservation_id=body.reservation_id,
            reserved_tokens=outcome.tokens,
            monthly_token_limit=outcome.quota.limit,
            remaining_tokens=outcome.quota.remaining,
        )

    def _hold_seconds(self, asked: int) -> int:
        """A reservation lives at least as long as its gateway may take to settle the chat."""
        return max(asked, self._settings.reservation_ttl_seconds)

    async def _refuse(self, body: ReservationRequest, refused: Refused) -> None:
        if refused.barred:
            raise ConflictError("This reservation was released", code="reservation_void")
        _log.info("quota_exceeded", user_id=body.user_id, tokens=body.tokens)
        entry = RequestLogEntry(
            request_id=body.request_id,
            user_id=body.user_id,
            period=body.period,
            model=body.model,
            status=RequestStatus.QUOTA_EXCEEDED,
            created_at=body.started_at,
        )
        await self._logs.add(body.reservation_id, entry)
        raise ForbiddenError(
            f"Token quota exceeded: this request needs up to {body.tokens} tokens (at least "
            f"{body.min_tokens} for its prompt) and {max(refused.remaining, 0)} are left "
            "this month",
            code="quota_exceeded",
            fields={
                "neededTokens": body.tokens,
                "minimumTokens": body.min_tokens,
                "remainingTokens": max(refused.remaining, 0),
            },
        )

    async def settle(self, settlement: Settlement) -> SettlementResult:
        """Apply a reservation's outcome to the ledger at most once, and log it."""
        key = usage_key(settlement.user_id, settlement.period)
        ledger, _ = await asyncio.gather(
            self._apply(settlement, key), self._logs.record_outcome(*_log_entry(settlement))
        )
        if ledger is SettlementOutcome.LATE:
            _log.warning("settled_after_expiry", reservation_id=settlement.reservation_id)
        if self._observer is not None and settlement.charged_tokens:
            # REPEATED too: the first delivery's process may have died before its detection.
            self._observer.charged(settlement.user_id, settlement.period)
        charged = 0 if ledger is SettlementOutcome.REPEATED else settlement.charged_tokens
        return SettlementResult(
            reservation_id=settlement.reservation_id, outcome=ledger, charged_tokens=charged
        )

    async def _apply(self, settlement: Settlement, key: str) -> SettlementOutcome:
        rid, reserved = settlement.reservation_id, settlement.reserved_tokens
        charge = settlement.charged_tokens
        for _ in range(3):
            if await self._usage.settle(
                key=key, reservation_id=rid, reserved=reserved, charge=charge
            ):
                return SettlementOutcome.SETTLED
            if await self._usage.settle_late(
                key=key, reservation_id=rid, reserved=reserved, charge=charge
            ):
                return SettlementOutcome.LATE
            if charge:
                return SettlementOutcome.REPEATED
            # A release of a reservation that is not open: it was released already, or never
            # made (its reserve may still arrive): bar its id, unless it opened meanwhile.
            month = new_usage(
                key,
                user_id=settlement.user_id,
                period=settlement.period,
                limit=self._settings.monthly_limit(settlement.plan),
                now=self._clock(),
            )
            if await self._usage.void(key=key, reservation_id=rid, month=month):
                return SettlementOutcome.VOIDED
        return SettlementOutcome.REPEATED

    async def log_attempt(self, body: AttemptLog, attempt_id: str) -> None:
        entry = RequestLogEntry(
            request_id=body.request_id,
            user_id=body.user_id,
            period=current_period(body.started_at),
            model=body.model,
            status=body.status,
            prompt_tokens=body.prompt_tokens,
            completion_tokens=body.completion_tokens,
            response_time_ms=body.response_time_ms,
            created_at=body.started_at,
        )
        await self._logs.add(attempt_id, entry)

    async def usage(
        self, *, user_id: str, plan: Plan | None, period: str | None = None
    ) -> UsageResponse:
        period = period or current_period(self._clock())
        record = await self._usage.get(usage_key(user_id, period))
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
        period = current_period(self._clock())
        limit = self._settings.monthly_limit(plan)
        await self._usage.set_limit(
            user_id=user_id, period=period, key=usage_key(user_id, period), limit=limit
        )
        _log.info("monthly_limit_changed", user_id=user_id, plan=plan.value, limit=limit)
        return await self.usage(user_id=user_id, plan=plan, period=period)

    async def release_expired(self) -> int:
        """Release every reservation past its expiry that was never settled; how many."""
        released = 0
        for _ in range(_SWEEP_PAGES):
            now = self._clock()
            months = await self._expiry.due_months(now, limit=_SWEEP_PAGE)
            counts = await asyncio.gather(*(self._release_month(key, now) for key in months))
            released += sum(count for count, _ in counts)
            if len(months) < _SWEEP_PAGE or not any(moved for _, moved in counts):
                break  # all done, or nothing moved (changed meanwhile: the next pass)
        if released:
            _log.warning("reservations_released", count=released)
        return released

    async def _release_month(self, key: str, now: datetime) -> tuple[int, bool]:
        """Release the month's expired reservations; (how many, whether its index moved)."""
        released = 0
        for reservation in await self._expiry.open_in(key):
            if reservation.expires_at < now:
                released += await self._release(reservation)
        return released, await self._expiry.rehold(key)

    async def _release(self, reservation: OpenReservation) -> int:
        # The log entry first: if the release then finds the reservation settled meanwhile, the
        # settlement's own entry has replaced (or kept out) this one.
        entry = RequestLogEntry(
            request_id=reservation.request_id,
            user_id=reservation.user_id,
            period=reservation.period,
            model=reservation.model,
            status=RequestStatus.EXPIRED,
            created_at=reservation.started_at,
        )
        await self._logs.add(reservation.reservation_id, entry)
        if not await self._expiry.expire(reservation):
            return 0
        if self._metrics is not None:
            self._metrics.expired(reservation.tokens)
        return 1


def _log_entry(settlement: Settlement) -> tuple[str, RequestLogEntry]:
    return settlement.reservation_id, RequestLogEntry(
        request_id=settlement.request_id,
        user_id=settlement.user_id,
        period=settlement.period,
        model=settlement.model,
        prompt_tokens=settlement.prompt_tokens,
        completion_tokens=settlement.completion_tokens,
        tokens_used=settlement.charged_tokens,
        response_time_ms=settlement.response_time_ms,
        status=settlement.status,
        created_at=settlement.started_at,
        backend=settlement.backend,
    )
