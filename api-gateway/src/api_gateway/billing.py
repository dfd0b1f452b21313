"""A chat's reservation and settlement, exactly once through faults (ChatTurn's side of it).

* Reserve: the gateway names the reservation. If the call fails in a way that leaves its outcome
  unknown (a timeout, a 5xx, the caller gone), the reservation is released by id through the
  outbox: usage-service releases it, or bars the id if it was never made (or not yet).
* Settle: the settlement is recorded in the outbox before the answer goes out, then delivered in
  the background (see settler). When Redis cannot take it, it is delivered directly; a plain
  answer whose charge can be neither recorded nor delivered is withheld (503), a stream that has
  already sent output keeps its settlement in this process (the residual risk, README).
* Streams mark themselves before their first output, so a gateway that dies mid-stream still has
  the stream charged in full (see settlement_outbox).

Settling survives cancellation: it runs in a task of its own (tracked, and awaited when the
process shuts down), which a client that leaves or a shutdown timeout cannot cancel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import anyio
import structlog
from infergate_common.billing import (
    RequestStatus,
    Reservation,
    ReservationRequest,
    Settlement,
)
from infergate_common.errors import AppError, UpstreamUnavailableError
from redis.exceptions import RedisError

from api_gateway.clients import UsageClient
from api_gateway.quota_room import QuotaRoom
from api_gateway.settlement_outbox import SettlementOutbox
from api_gateway.settler import Settler
from api_gateway.telemetry import GatewayMetrics

_log = structlog.get_logger("billing")
_DIRECT_ATTEMPTS = 3


class Billing:
    def __init__(
        self,
        *,
        usage: UsageClient,
        outbox: SettlementOutbox,
        settler: Settler,
        mark_ms: int,
        metrics: GatewayMetrics,
        room_seconds: float = 600.0,
    ) -> None:
        self._usage = usage
        # What each user's month had left after their last reservation (a hint, see quota_room).
        self.room = QuotaRoom(max_age_s=room_seconds)
        self._metrics = metrics
        self._outbox = outbox
        self._settler = settler
        self._mark_ms = mark_ms
        self._tasks: set[asyncio.Task[Any]] = set()

    async def reserve(
        self, request: ReservationRequest, *, room: bool = True, timeout_s: float = 0.0
    ) -> Reservation:
        """Reserve; unless the user has `room` (see quota_room), first wait (at most
        `timeout_s`) for the user's settlements still lingering here to be applied: a user near
        the quota is told what their last chat really left, not what its reservation held."""
        if not room and timeout_s > 0 and self._settler.pending_for(request.user_id):
            await self._settler.applied_for(request.user_id, timeout_s=timeout_s)
        try:
            reservation = await self._usage.reserve(request)
        except AppError as exc:
            self.room.forget(request.user_id)
            self._metrics.reservations.labels(
                "refused" if exc.status_code == 403 else "failed"
            ).inc()
            if exc.status_code >= 500:  # it may have been made all the same
                self._release_unknown(request, RequestStatus.TIMEOUT)
            raise
        except BaseException:
            self._metrics.reservations.labels("failed").inc()
            self._release_unknown(request, RequestStatus.CANCELLED)
            raise
        self.room.saw(request.user_id, reservation.remaining_tokens)
        self._metrics.reservations.labels("granted").inc()
        self._metrics.quota_tokens.labels("reserved").inc(reservation.reserved_tokens)
        return reservation

    def _release_unknown(self, request: ReservationRequest, status: RequestStatus) -> None:
        release = Settlement(
            reservation_id=request.reservation_id,
            request_id=request.request_id,
            user_id=request.user_id,
            plan=request.plan,
            reserved_tokens=request.tokens,
            status=status,
            model=request.model,
            response_time_ms=0.0,
            started_at=request.started_at,
        )
        self.settle_later(release)

    def settle_later(self, settlement: Settlement) -> None:
        """Settle in the background (for a caller that is going away)."""
        self._spawn(self.settle(settlement, required=False))

    async def mark_output(self, in_full: Settlement) -> bool:
        """Before a stream's first output: if this process never settles it, it is charged in
        full. False when Redis did not take the mark (the stream goes on unmarked)."""
        try:
            await self._outbox.mark(in_full, deadline_ms=self._mark_ms)
        except RedisError as exc:
            self._metrics.redis_errors.labels("settlement_outbox").inc()
            _log.warning("stream_mark_failed", error_type=type(exc).__name__)
            return False
        return True

    async def settle_shielded(
        self, settlement: Settlement, *, instead_of: Settlement | None = None, required: bool
    ) -> Settlement:
        """`settle`, in a task that neither a client leaving nor a cancelled request stops."""
        task = self._spawn(self.settle(settlement, instead_of=instead_of, required=required))
        with anyio.CancelScope(shield=True):
            charged = await asyncio.shield(task)
        return charged

    async def settle(
        self, settlement: Settlement, *, instead_of: Settlement | None = None, required: bool
    ) -> Settlement:
        """`_settle`, counted: the settlement that is charged, by outcome and in tokens."""
        charged = await self._settle(settlement, instead_of=instead_of, required=required)
        in_full = charged is instead_of and instead_of is not None
        self._metrics.record_settled(charged, in_full=in_full)
        self._metrics.record_billed(charged)
        return charged

    async def _settle(
        self, settlement: Settlement, *, instead_of: Settlement | None, required: bool
    ) -> Settlement:
        """Record the settlement durably and have it delivered; the settlement that is charged.

        `instead_of` is the stream's mark: when its deadline passed first, the chat is charged in
        full, and that is what the client is told. `required`: raise 503 when the charge cannot
        be saved anywhere (a plain answer, still withheld); otherwise it is kept in process."""
        applied = self._settler.take_applied()
        try:
            recorded = await self._outbox.record(
                settlement, marked=instead_of is not None, applied=applied
            )
        except RedisError as exc:
            self._settler.give_back(applied)
            self._metrics.redis_errors.labels("settlement_outbox").inc()
            _log.warning("settlement_outbox_unavailable", error_type=type(exc).__name__)
            return await self._settle_directly(settlement, required=required)
        if not recorded and instead_of is not None:
            _log.warning("stream_charged_in_full", reservation_id=settlement.reservation_id)
            return instead_of
        self._metrics.settlements.labels("outbox").inc()
        self._settler.dispatch(settlement)
        return settlement

    async def _settle_directly(self, settlement: Settlement, *, required: bool) -> Settlement:
        for attempt in range(1, _DIRECT_ATTEMPTS + 1):
            try:
                await self._settler.deliver([settlement])
                self._metrics.settlements.labels("direct").inc()
                return settlement
            except AppError as exc:
                _log.warning("settle_failed", attempt=attempt, code=exc.error_code)
                await asyncio.sleep(0.2 * attempt)
        if required and settlement.charged_tokens:
            # Nothing was sent: release the reservation (from here, later) and answer 503.
            self._settler.keep(_released(settlement))
            self._metrics.settlements.labels("kept").inc()
            raise UpstreamUnavailableError(
                "Billing is unavailable; the answer was not charged and is not sent",
                code="billing_unavailable",
            )
        self._settler.keep(settlement)
        self._metrics.settlements.labels("kept").inc()
        return settlement

    def _spawn(self, work: Coroutine[Any, Any, Settlement]) -> asyncio.Task[Settlement]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Settlement]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.warning("background_settlement_failed", error=str(task.exception()))

    async def drain(self) -> None:
        """Wait for the settlements still being recorded (called on shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _released(settlement: Settlement) -> Settlement:
    return settlement.model_copy(
        update={"prompt_tokens": 0, "completion_tokens": 0, "status": RequestStatus.UPSTREAM_ERROR}
    )
