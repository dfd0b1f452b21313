"""usage-service against SecantusDB run as a one-member replica set (as the local stack runs it)
with a `replicaSet=` URI: the ledger is written with majority write concern and retryable writes
and read with majority read concern, an operator's URI options are kept, and a restart or a
step-down of the database under load loses no settlement acknowledged to the gateway and
applies none twice."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from infergate_common.billing import (
    RequestStatus,
    Reservation,
    ReservationRequest,
    Settlement,
    SettlementOutcome,
    period_of,
)
from infergate_common.errors import AppError
from infergate_common.mongo import DATABASE_UNAVAILABLE, open_mongo
from infergate_common.validation import Plan
from infergate_devstack.components.datastores import MONGO_REPLICA_SET, mongo_uri, scratch_mongo
from infergate_devstack.install import ensure_secantus
from infergate_devstack.ports import free_ports
from infergate_devstack.processes import ManagedProcess
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient, ReadPreference, monitoring
from pymongo.errors import WriteConcernError
from usage_calls import new_user, settings_for
from usage_service.periods import usage_key
from usage_service.resources import Resources, open_resources

Document = dict[str, Any]
T = TypeVar("T")
LIMIT = 1_000_000  # no reservation is refused: every one is settled
HELD = 40
USERS = 24
# The gateway's outbox delivers a settlement again until it is acknowledged, after a pause.
REDELIVERY_S = 0.05


@dataclasses.dataclass
class Server:
    process: ManagedProcess
    port: int

    def uri(self, database: str | None = None) -> str:
        """The URI the services get, with PyMongo's retryable writes (a production URI's)."""
        return mongo_uri(self.port, database, retry_writes=True)

    def restart(self) -> None:
        """SIGTERM, wait for the exit, start again on the same port and data directory."""
        self.process.stop()
        self.process.spawn()
        self.process.wait_ready()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("replica-set")
    (port,) = free_ports(1)
    # failCommand, to have a write that a majority does not confirm.
    process = scratch_mongo(
        ensure_secantus(print), root, port, extra_args=("--enable-test-commands",)
    )
    process.spawn()
    try:
        process.wait_ready()
        yield Server(process, port)
    finally:
        process.stop()


@pytest.fixture
async def usage(server: Server) -> AsyncIterator[tuple[Resources, CollectorRegistry]]:
    """usage-service's resources as its lifespan opens them, on a fresh database."""
    registry = CollectorRegistry()
    settings = settings_for(server.uri(f"rs-{uuid.uuid4().hex[:8]}"), free_monthly_tokens=LIMIT)
    async with AsyncExitStack() as stack:
        yield await open_resources(settings, stack, registry=registry), registry


class SentCommands(monitoring.CommandListener):
    """The commands sent to one database, whichever client sent them (registered globally:
    the service makes its client inside `open_resources`)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.commands: list[Document] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.database:
            self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Nothing to record."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to record."""

    def named(self, *names: str) -> list[Document]:
        return [command for command in self.commands if next(iter(command)) in names]


def reservation_request(user: str) -> ReservationRequest:
    return ReservationRequest(
        reservation_id=uuid.uuid4().hex,
        request_id=f"req-{uuid.uuid4().hex[:12]}",
        user_id=user,
        plan=Plan.FREE,
        tokens=HELD,
        min_tokens=HELD,
        hold_seconds=600,
        model="m",
        started_at=datetime.now(UTC),
    )


def settlement_of(request: ReservationRequest, held: Reservation, charge: int) -> Settlement:
    return Settlement(
        reservation_id=request.reservation_id,
        request_id=request.request_id,
        user_id=request.user_id,
        plan=request.plan,
        reserved_tokens=held.reserved_tokens,
        prompt_tokens=charge,
        status=RequestStatus.SUCCESS,
        model=request.model,
        response_time_ms=1.0,
        started_at=request.started_at,
    )


def answered_503(exc: Exception) -> bool:
    """What the service's HTTP layer answers 503 for (anything else would be a 500)."""
    if isinstance(exc, AppError):
        return exc.status_code == 503
    return isinstance(exc, DATABASE_UNAVAILABLE)


async def test_the_ledger_is_written_by_majority_retryable_writes_and_read_by_majority(
    server: Server,
) -> None:
    database = f"rs-{uuid.uuid4().hex[:8]}"
    sent = SentCommands(database)
    monitoring.register(sent)
    settings = settings_for(server.uri(database), free_monthly_tokens=LIMIT)
    async with AsyncExitStack() as stack:
        resources = await open_resources(settings, stack, registry=CollectorRegistry())
        client = resources.mongo
        request = reservation_request(new_user())
        held = await resources.metering.reserve(request)
        await resources.metering.settle(settlement_of(request, held, 7))
        await resources.metering.usage(user_id=request.user_id, plan=Plan.FREE)

        assert client.topology_description.topology_type_name == "ReplicaSetWithPrimary"
        assert client.options.replica_set_name == MONGO_REPLICA_SET
        assert client.options.retry_writes is True
        assert client.write_concern.document == {"w": "majority"}
        assert client.read_concern.level == "majority"
    writes = sent.named("insert", "update")
    assert writes, sent.commands
    for command in writes:  # the concern in effect on each ledger collection, as sent
        assert command["writeConcern"] == {"w": "majority"}, command
        assert "txnNumber" in command, command  # retryable: a retry is recognised by it
    reads = sent.named("find")
    assert reads, sent.commands
    assert all(command["readConcern"] == {"level": "majority"} for command in reads), reads


async def test_an_operators_uri_options_are_kept() -> None:
    uri = (
        "mongodb://h1:27017,h2:27017/ledger?replicaSet=rs9&W=1&readConcernLevel=local"
        "&retryWrites=false&readPreference=secondaryPreferred"
    )
    client, db = open_mongo(uri, default_db="other", timeout_ms=2000)
    await client.close()

    assert client.options.replica_set_name == "rs9"
    assert client.write_concern.document == {"w": 1}
    assert client.read_concern.level == "local"
    assert client.options.retry_writes is False
    assert client.read_preference == ReadPreference.SECONDARY_PREFERRED
    assert db.name == "ledger"


def test_unacknowledged_writes_are_refused() -> None:
    with pytest.raises(ValueError, match="w=0"):
        open_mongo("mongodb://h1/?replicaSet=rs9&w=0", default_db="x", timeout_ms=2000)


async def test_a_settlement_a_majority_did_not_confirm_is_not_acknowledged_and_charged_once(
    server: Server, usage: tuple[Resources, CollectorRegistry]
) -> None:
    metering = usage[0].metering
    request = reservation_request(new_user())
    held = await metering.reserve(request)
    admin: AsyncMongoClient[Document] = AsyncMongoClient(server.uri())
    try:
        await admin.admin.command(
            "configureFailPoint",
            "failCommand",
            mode={"times": 1},
            data={
                "failCommands": ["update"],
                "writeConcernError": {"code": 64, "errmsg": "waiting for replication timed out"},
            },
        )
        settlement = settlement_of(request, held, 11)
        with pytest.raises(WriteConcernError):  # the primary applied it: a 503 all the same
            await metering.settle(settlement)
        again = await metering.settle(settlement)  # the gateway's outbox delivers it again
    finally:
        await admin.close()

    assert again.outcome is SettlementOutcome.REPEATED
    month = await metering.usage(user_id=request.user_id, plan=Plan.FREE)
    assert (month.usedTokens, month.reservedTokens) == (11, 0)


@dataclasses.dataclass
class Acknowledged:
    """What the callers (gateways) were told."""

    charges: dict[str, dict[str, int]] = dataclasses.field(
        default_factory=lambda: defaultdict(dict)
    )  # month key -> reservation id -> charge
    outcomes: Counter[SettlementOutcome] = dataclasses.field(default_factory=Counter)
    unavailable: int = 0  # answers that were 503s, delivered again
    changed: asyncio.Condition = dataclasses.field(default_factory=asyncio.Condition)

    @property
    def settled(self) -> int:
        return sum(self.outcomes.values())

    async def add(self, settlement: Settlement, outcome: SettlementOutcome) -> None:
        key = usage_key(settlement.user_id, period_of(settlement.started_at))
        assert settlement.reservation_id not in self.charges[key]
        self.charges[key][settlement.reservation_id] = settlement.charged_tokens
        async with self.changed:
            self.outcomes[outcome] += 1
            self.changed.notify_all()

    async def reach(self, count: int) -> None:
        async with asyncio.timeout(20), self.changed:
            await self.changed.wait_for(lambda: self.settled >= count)


async def until_acknowledged(call: Callable[[], Awaitable[T]], told: Acknowledged) -> T:
    """`call()` again after each 503, as the gateway does (its outbox for settlements; for a
    reservation, the same id again); anything else fails the test (it would be a 500)."""
    while True:
        try:
            return await call()
        except Exception as exc:
            if not answered_503(exc):
                raise
            told.unavailable += 1
        await asyncio.sleep(REDELIVERY_S)


async def gateway(user: str, resources: Resources, told: Acknowledged, stop: asyncio.Event) -> None:
    """One user's chats, one after another: reserve, then settle (charges 1 to 9 tokens)."""
    metering = resources.metering
    chat = 0
    while not stop.is_set():
        chat += 1
        request = reservation_request(user)
        held = await until_acknowledged(functools.partial(metering.reserve, request), told)
        settlement = settlement_of(request, held, 1 + chat % 9)
        result = await until_acknowledged(functools.partial(metering.settle, settlement), told)
        await told.add(settlement, result.outcome)


async def step_down(server: Server, seconds: int) -> None:
    admin: AsyncMongoClient[Document] = AsyncMongoClient(server.uri())
    try:
        reply = await admin.admin.command({"replSetStepDown": seconds, "force": True})
        hello = await admin.admin.command("hello", read_preference=ReadPreference.NEAREST)
    finally:
        await admin.close()
    assert reply["ok"] == 1.0
    assert (hello["isWritablePrimary"], hello["secondary"]) == (False, True)


async def test_a_restart_and_a_step_down_under_load_lose_no_acknowledged_settlement(
    server: Server, usage: tuple[Resources, CollectorRegistry]
) -> None:
    resources, registry = usage
    told, stop = Acknowledged(), asyncio.Event()
    users = [new_user() for _ in range(USERS)]
    load = [asyncio.create_task(gateway(user, resources, told, stop)) for user in users]
    try:
        await told.reach(2 * USERS)
        await asyncio.to_thread(server.restart)
        after_restart = told.settled
        await told.reach(after_restart + 2 * USERS)
        await step_down(server, 1)
        await told.reach(told.settled + 2 * USERS)
    finally:
        stop.set()
        await asyncio.gather(*load)

    failed = failed_commands(registry)
    print(f"acknowledged {dict(told.outcomes)}, 503s delivered again {told.unavailable}, {failed}")
    assert failed.get("heartbeat"), "the service's client never saw the database away"
    assert set(told.outcomes) <= {SettlementOutcome.SETTLED, SettlementOutcome.REPEATED}
    await assert_ledger_holds_exactly(resources, told)


def failed_commands(registry: CollectorRegistry) -> dict[str, float]:
    """The service's count of failed database commands, by command (its MongoErrors)."""
    return {
        sample.labels["command"]: sample.value
        for metric in registry.collect()
        if metric.name == "infergate_mongo_errors"
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


async def assert_ledger_holds_exactly(resources: Resources, told: Acknowledged) -> None:
    """Each acknowledged settlement is charged once in its month and logged once; nothing is
    left held; nothing else is charged."""
    database = resources.mongo.get_default_database()
    months = {
        document["_id"]: document
        async for document in database["usage"].find({"_id": {"$in": list(told.charges)}})
    }
    logs: dict[str, Document] = {
        document["_id"]: document async for document in database["requestlogs"].find({})
    }
    for key, charges in told.charges.items():
        month = months[key]
        assert month["usedTokens"] == sum(charges.values()), key
        assert (month["reservedTokens"], month["open"]) == (0, []), key
        assert month["remainingTokens"] == LIMIT - month["usedTokens"], key
        for reservation_id, charge in charges.items():
            assert logs[reservation_id]["tokensUsed"] == charge
    assert len(logs) == told.settled == sum(len(charges) for charges in told.charges.values())
    assert await database["usage"].count_documents({}) == len(told.charges)
