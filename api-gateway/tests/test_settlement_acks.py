"""A settlement applied to the ledger is acknowledged in the Redis outbox with the next settlement
the gateway records (one round trip for both), within ACK_LINGER_S when none comes, and at once
when the gateway shuts down. Real Redis; usage-service is a stand-in ledger."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import pytest
import redis.asyncio as redis
from api_gateway import settler as settler_module
from api_gateway.billing import Billing
from api_gateway.clients import UsageClient
from api_gateway.settlement_outbox import OutboxKeys, SettlementOutbox
from api_gateway.settler import Settler
from api_gateway.telemetry import GatewayMetrics
from infergate_common.billing import RequestStatus, Settlement
from infergate_common.errors import UpstreamUnavailableError
from infergate_common.validation import Plan
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from redis_cluster import wait_for_async

KEYS = OutboxKeys()


@dataclass
class StandInLedger:
    """What usage-service would apply: the reservation ids, in order."""

    applied: list[str] = field(default_factory=list)

    async def settle_many(self, settlements: Sequence[Settlement]) -> None:
        self.applied.extend(s.reservation_id for s in settlements)


@dataclass
class Gateway:
    ledger: StandInLedger
    outbox: SettlementOutbox
    settler: Settler
    billing: Billing


@pytest.fixture
async def gateway(redis_client: redis.Redis) -> AsyncIterator[Gateway]:
    ledger = StandInLedger()
    usage = cast(UsageClient, ledger)
    metrics = GatewayMetrics.create(CollectorRegistry(), models=["llama3"])
    outbox = SettlementOutbox(redis_client, lease_ms=60_000)
    settler = Settler(usage=usage, outbox=outbox, claim_interval_s=60.0, metrics=metrics)
    billing = Billing(usage=usage, outbox=outbox, settler=settler, mark_ms=60_000, metrics=metrics)
    yield Gateway(ledger, outbox, settler, billing)
    await settler.close(timeout_s=5)


def settlement() -> Settlement:
    return Settlement(
        reservation_id=uuid.uuid4().hex,
        request_id=uuid.uuid4().hex,
        user_id="a" * 24,
        plan=Plan.FREE,
        reserved_tokens=100,
        prompt_tokens=9,
        completion_tokens=3,
        status=RequestStatus.SUCCESS,
        model="llama3",
        response_time_ms=1.0,
        started_at=datetime.now(UTC),
    )


def now(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition()

    return check


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def in_outbox(client: redis.Redis) -> set[str]:
    records = {_text(key) for key in await client.hkeys(KEYS.records)}
    due = {_text(member) for member in await client.zrange(KEYS.due, 0, -1)}
    assert records == due
    return records


async def test_an_applied_settlement_is_acknowledged_with_the_next_one_recorded(
    gateway: Gateway, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settler_module, "ACK_LINGER_S", 60.0)  # only the next record acks
    first, second = settlement(), settlement()
    await gateway.billing.settle(first, required=True)
    first_applied = now(lambda: gateway.ledger.applied == [first.reservation_id])
    await wait_for_async("first applied", first_applied)
    assert await in_outbox(redis_client) == {first.reservation_id}  # applied, not yet acked
    await gateway.billing.settle(second, required=True)
    # The second's record acknowledged the first in the same round trip.
    assert await in_outbox(redis_client) <= {second.reservation_id}
    await wait_for_async("second applied", now(lambda: len(gateway.ledger.applied) == 2))
    assert gateway.ledger.applied == [first.reservation_id, second.reservation_id]


async def test_without_another_record_the_ack_comes_after_the_linger(
    gateway: Gateway, redis_client: redis.Redis
) -> None:
    done = settlement()
    await gateway.billing.settle(done, required=True)
    await wait_for_async("applied", now(lambda: gateway.ledger.applied == [done.reservation_id]))

    async def emptied() -> bool:
        return not await in_outbox(redis_client)

    await wait_for_async("acknowledged after the linger", emptied)


async def test_a_gateway_shutting_down_acknowledges_what_was_applied(
    gateway: Gateway, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settler_module, "ACK_LINGER_S", 60.0)
    done = settlement()
    await gateway.billing.settle(done, required=True)
    await wait_for_async("applied", now(lambda: gateway.ledger.applied == [done.reservation_id]))
    assert await in_outbox(redis_client) == {done.reservation_id}
    await gateway.settler.close(timeout_s=5)
    assert await in_outbox(redis_client) == set()


async def test_what_is_not_applied_stays_in_the_outbox(
    gateway: Gateway, redis_client: redis.Redis
) -> None:
    async def refuse(settlements: Sequence[Settlement]) -> None:
        raise UpstreamUnavailableError("usage-service is down")

    gateway.ledger.settle_many = refuse  # type: ignore[method-assign]
    failed, later = settlement(), settlement()
    await gateway.billing.settle(failed, required=True)
    await gateway.billing.settle(later, required=True)
    await gateway.settler.close(timeout_s=5)
    # Neither was applied: both wait for a claim, acknowledged by no record and no shutdown.
    assert await in_outbox(redis_client) == {failed.reservation_id, later.reservation_id}


_REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request")


async def test_the_later_ack_is_not_made_in_the_context_of_the_request_that_started_it(
    gateway: Gateway, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request's context holds its trace: an acknowledgement made 0.25 s later, for whatever
    # settlements were applied meanwhile, would appear in that request's trace.
    monkeypatch.setattr(settler_module, "ACK_LINGER_S", 0.0)
    seen: list[str | None] = []
    acknowledge = gateway.outbox.acknowledge

    async def recording(reservation_ids: list[str]) -> None:
        request = _REQUEST.get(None)
        await acknowledge(reservation_ids)
        seen.append(request)

    monkeypatch.setattr(gateway.outbox, "acknowledge", recording)
    _REQUEST.set("a chat")
    done = settlement()
    await gateway.billing.settle(done, required=True)
    await wait_for_async("acknowledged", now(lambda: bool(seen)))
    assert seen == [None]
    assert await in_outbox(redis_client) == set()


async def test_settlements_are_delivered_outside_the_trace_of_the_request_that_recorded_them(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The delivery of a batch (several chats' settlements) is no part of the trace of the chat
    # whose settlement happened to start it (the chat's request id still goes with it:
    # test_gateway_api).
    seen: list[bool] = []
    settle_many = gateway.ledger.settle_many

    async def recording(settlements: Sequence[Settlement]) -> None:
        seen.append(trace.get_current_span().get_span_context().is_valid)
        await settle_many(settlements)

    monkeypatch.setattr(gateway.ledger, "settle_many", recording)
    with TracerProvider().get_tracer("test").start_as_current_span("POST /v1/chat"):
        await gateway.billing.settle(settlement(), required=True)
    await wait_for_async("delivered", now(lambda: bool(seen)))
    assert seen == [False]
