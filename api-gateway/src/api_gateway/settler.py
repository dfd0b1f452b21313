"""Delivering settlements to usage-service, off the user's wait.

A recorded settlement (in the Redis outbox) is delivered by the gateway that recorded it within
`linger_s` (SETTLEMENT_BATCH_MS), together with whatever else is waiting (one call per batch, one
batch in flight: a busy gateway sends fewer, larger batches; the linger gives a quiet one batches
too), and acknowledged in Redis once usage-service has applied it: with the next settlement this
gateway records (the same round trip), or within `ACK_LINGER_S` if none comes (an applied
settlement left in the outbox a moment longer is harmless: its lease is far longer, and applying
it again would change nothing). A reader of a user's usage waiting for the user's settlements
(`applied_for`) has them sent at once. What
could not be delivered stays in the outbox, and every gateway claims what is due there each
`SETTLEMENT_CLAIM_SECONDS`: settlements of a gateway that died, of an outage of usage-service or
the database, and streams charged in full because their gateway never finished them.

A settlement that could not even be recorded (Redis unreachable too) is kept in this process and
tried again each claim interval, first into the outbox, else directly; only these are lost if the
process dies before either works.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
from collections import Counter

import structlog
from infergate_common.billing import Settlement
from infergate_common.errors import AppError
from infergate_common.tasks import cancel_and_wait
from infergate_common.tracing import outside_any_trace
from pydantic import ValidationError
from redis.exceptions import RedisError

from api_gateway.clients import UsageClient
from api_gateway.settlement_outbox import SettlementOutbox
from api_gateway.telemetry import GatewayMetrics

_log = structlog.get_logger("settler")
_BATCH = 256
ACK_LINGER_S = 0.25  # well within the outbox lease (SETTLEMENT_RETRY_SECONDS)


class Settler:
    def __init__(
        self,
        *,
        usage: UsageClient,
        outbox: SettlementOutbox,
        claim_interval_s: float,
        metrics: GatewayMetrics,
        linger_s: float = 0.0,
    ) -> None:
        self._usage = usage
        self._linger_s = linger_s
        self._hurry = asyncio.Event()  # send what is queued now (a reader waits, or closing)
        self._metrics = metrics
        self._outbox = outbox
        self._claim_interval_s = claim_interval_s
        self._queue: list[Settlement] = []  # recorded, to deliver now
        self._sender: asyncio.Task[None] | None = None
        self._unrecorded: dict[str, Settlement] = {}  # not in the outbox: only here
        self._pending = Counter[str]()  # per user: settlements of this process not yet applied
        self._settled = asyncio.Event()
        self._claimer: asyncio.Task[None] | None = None
        self._applied: list[str] = []  # applied to the ledger, not yet acknowledged in Redis
        self._acker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._claimer = asyncio.create_task(self._claim_forever())

    def dispatch(self, settlement: Settlement) -> None:
        """Deliver a recorded settlement soon (within the linger), with others that are waiting."""
        self._pending[settlement.user_id] += 1
        self._queue.append(settlement)
        if len(self._queue) >= _BATCH:
            self._hurry.set()
        if self._sender is None:
            # Outside the trace of whichever chat's task happens to start it: a batch holds the
            # settlements of several chats (it keeps that chat's request id, for the logs).
            self._sender = asyncio.create_task(self._send_batches(), context=outside_any_trace())

    def keep(self, settlement: Settlement) -> None:
        """A settlement the outbox could not take: retried from here until it is applied."""
        _log.error("settlement_not_recorded", reservation_id=settlement.reservation_id)
        self._unrecorded[settlement.reservation_id] = settlement

    async def deliver(self, settlements: list[Settlement]) -> None:
        """Apply settlements now (raises the usage client's errors)."""
        await self._usage.settle_many(settlements)

    def take_applied(self) -> list[str]:
        """The ids of applied settlements still to acknowledge, for the caller to acknowledge
        with its next outbox write (`give_back` if that write fails)."""
        applied, self._applied = self._applied, []
        return applied

    def give_back(self, applied: list[str]) -> None:
        if applied:
            self._applied.extend(applied)
            self._ack_soon()

    def pending_for(self, user_id: str) -> bool:
        """Whether settlements of the user from this process are still to be applied."""
        return self._pending[user_id] > 0

    async def applied_for(self, user_id: str, *, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until this process's settlements of the user are applied,
        so a user's next read of their usage shows their last chat."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._pending[user_id] > 0:
                    self._hurry.set()
                    self._settled.clear()
                    await self._settled.wait()

    async def close(self, *, timeout_s: float) -> None:
        """Stop claiming; deliver what is queued and what only this process holds."""
        if self._claimer is not None:
            await cancel_and_wait(self._claimer)
        self._hurry.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._sender is not None:
                    await asyncio.shield(self._sender)
                for _ in itertools.count():
                    if not self._unrecorded or await self._retry_unrecorded():
                        break
                    await asyncio.sleep(0.2)
        for settlement in self._unrecorded.values():
            _log.error("settlement_lost", reservation_id=settlement.reservation_id)
        if self._acker is not None:
            await cancel_and_wait(self._acker)
        await self._acknowledge(self.take_applied())

    async def _send_batches(self) -> None:
        try:
            if self._linger_s > 0 and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger_s):
                        await self._hurry.wait()
            while self._queue:
                batch = self._queue[:_BATCH]
                del self._queue[:_BATCH]
                await self._send(batch)
        finally:
            self._sender = None
            self._hurry.clear()

    async def _send(self, batch: list[Settlement]) -> None:
        try:
            await self.deliver(batch)
        except AppError as exc:
            # Still in the outbox: claimed again once its lease runs out.
            _log.warning("settlement_delivery_failed", count=len(batch), error=str(exc))
        else:
            self._applied.extend(s.reservation_id for s in batch)
            self._ack_soon()
        finally:
            for settlement in batch:
                self._pending[settlement.user_id] -= 1
                if self._pending[settlement.user_id] <= 0:
                    del self._pending[settlement.user_id]
            self._settled.set()

    def _ack_soon(self) -> None:
        if self._acker is None:
            # Background work in a context of its own: not part of the trace (nor the
            # instrumentation state) of whichever request's task happens to start it.
            self._acker = asyncio.create_task(
                self._acknowledge_later(), context=contextvars.Context()
            )

    async def _acknowledge_later(self) -> None:
        try:
            await asyncio.sleep(ACK_LINGER_S)
            await self._acknowledge(self.take_applied())
        finally:
            self._acker = None
        if self._applied:  # applied while this acknowledgement was under way
            self._ack_soon()

    async def _acknowledge(self, applied: list[str]) -> None:
        if not applied:
            return
        try:
            await self._outbox.acknowledge(applied)
        except RedisError as exc:
            # Left in the outbox: claimed and applied again (changing nothing) after the lease.
            self._count_redis_error(exc)
            _log.warning("settlement_ack_failed", count=len(applied), error=str(exc))

    async def _claim_forever(self) -> None:
        while True:
            await asyncio.sleep(self._claim_interval_s)
            try:
                await self.claim_once()
            except Exception:  # noqa: BLE001 - billing must outlive any one failure
                _log.exception("settlement_claim_failed")

    async def claim_once(self) -> int:
        """Deliver what is due in the outbox, and what only this process holds; how many."""
        if self._unrecorded:
            await self._retry_unrecorded()
        delivered = 0
        while True:
            try:
                due = await self._outbox.claim(limit=_BATCH)
            except (RedisError, ValidationError) as exc:
                self._count_redis_error(exc)
                _log.warning("settlement_claim_unavailable", error_type=type(exc).__name__)
                return delivered
            if not due:
                return delivered
            try:
                await self.deliver(due)
                await self._outbox.acknowledge([s.reservation_id for s in due])
            except (AppError, RedisError) as exc:
                self._count_redis_error(exc)
                _log.warning("settlement_delivery_failed", count=len(due), error=str(exc))
                return delivered
            delivered += len(due)
            self._metrics.settlements.labels("recovered").inc(len(due))
            _log.info("settlements_recovered", count=len(due))

    async def _retry_unrecorded(self) -> bool:
        """Into the outbox if Redis is back, else straight to usage-service; True when none is
        left."""
        for rid, settlement in list(self._unrecorded.items()):
            try:
                await self._outbox.record(settlement, marked=False)
            except RedisError as exc:
                self._count_redis_error(exc)
                try:
                    await self.deliver([settlement])
                except AppError:
                    continue
            else:
                self.dispatch(settlement)
            del self._unrecorded[rid]
        return not self._unrecorded

    def _count_redis_error(self, exc: Exception) -> None:
        if isinstance(exc, RedisError):
            self._metrics.redis_errors.labels("settlement_outbox").inc()
