"""Opening the MongoDB client the services share the shape of (PyMongo's async API)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlsplit

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    ExecutionTimeout,
    NetworkTimeout,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from infergate_common.app import READINESS_RESPONSES, ReadinessResponse
from infergate_common.errors import error_body, error_responses
from infergate_common.metrics import MetricsOff, counter

_log = structlog.get_logger("mongo")
T = TypeVar("T")
# What every database-backed route can answer when the database is down (for its OpenAPI).
DATABASE_ERROR_RESPONSES = error_responses(503)
# The errors such a route answers 503 for: the database cannot be reached or timed out, or a
# majority did not confirm a write (the primary applied it, a failover may undo it).
DATABASE_UNAVAILABLE: tuple[type[PyMongoError], ...] = (
    ConnectionFailure,
    ExecutionTimeout,
    WriteConcernError,
)


Mongo = AsyncMongoClient[dict[str, Any]]


class MongoErrors(monitoring.CommandListener, monitoring.ServerHeartbeatListener):
    """Counts what failed at the database (PyMongo's monitoring events): commands by name, and
    the client's heartbeats to the server (`heartbeat`: the server cannot be reached), as
    `infergate_mongo_errors_total{service,command}`. Command names are PyMongo's (bounded)."""

    def __init__(self, registry: CollectorRegistry, *, service: str) -> None:
        self._errors = counter(
            "infergate_mongo_errors_total",
            "MongoDB commands that failed, by command (heartbeat: the server is unreachable).",
            ["service", "command"],
            registry=registry,
        )
        self._service = service
        self._heartbeats = self._errors.labels(service, "heartbeat")  # at 0 from the start

    @classmethod
    def of(cls, registry: CollectorRegistry, *, service: str) -> MongoErrors | None:
        """The listener for `registry`; None when metrics are off (no events are published)."""
        return None if isinstance(registry, MetricsOff) else cls(registry, service=service)

    def started(self, event: Any) -> None:
        """Nothing to count (the listener's method for both event kinds)."""

    def succeeded(self, event: Any) -> None:
        """Nothing to count."""

    def failed(self, event: Any) -> None:
        if isinstance(event, monitoring.ServerHeartbeatFailedEvent):
            self._heartbeats.inc()
        elif _code(event) not in _ANSWERS:
            self._errors.labels(self._service, event.command_name).inc()


# Failures that are answers (listing the indexes of a collection not created yet).
_ANSWERS = frozenset({26})  # NamespaceNotFound


def _code(event: monitoring.CommandFailedEvent) -> int | None:
    failure = event.failure
    code = failure.get("code") if isinstance(failure, dict) else None
    return code if isinstance(code, int) else None


# What the ledger (quotas, charges, users and keys) needs of every write and read, unless the
# operator's MONGO_URI sets it otherwise. Majority writes: a charge or key change acknowledged to
# a caller is on a majority of the replica set, so it survives a primary failover. Retryable
# writes: a write cut by a failover or a restart is sent once more, by PyMongo (every write the
# services make may be repeated: conditional filters, unique ids). Majority reads: a read never
# returns what a failover could roll back, and on the same primary it sees every write
# acknowledged before it was sent. No decision rests on a read: each is a conditional write.
LEDGER_OPTIONS: dict[str, Any] = {
    "w": "majority",
    "retryWrites": True,
    "readConcernLevel": "majority",
}


def _uri_options(uri: str) -> dict[str, str]:
    """The options written in `uri`'s query, by lower-cased name (as MongoDB compares them).
    A `mongodb+srv` DNS record may only add authSource, replicaSet and loadBalanced."""
    return {name.lower(): value for name, value in parse_qsl(urlsplit(uri).query)}


def ledger_options(uri: str) -> dict[str, Any]:
    """`LEDGER_OPTIONS` that `uri` leaves unset: the URI wins (a keyword argument would override
    it in PyMongo), so an operator's w, readConcernLevel and retryWrites are kept."""
    given = _uri_options(uri)
    if given.get("w") == "0":
        raise ValueError("MONGO_URI sets w=0: the ledger needs acknowledged writes")
    return {name: value for name, value in LEDGER_OPTIONS.items() if name.lower() not in given}


def open_mongo(
    uri: str, *, default_db: str, timeout_ms: int, errors: MongoErrors | None = None
) -> tuple[Mongo, AsyncDatabase[dict[str, Any]]]:
    """A client with the ledger's write and read concerns and bounded timeouts (so a stopped
    server means a quick 503, never a hang).

    `timeoutMS` bounds each whole operation, retries included, so it must stay below the
    gateway's timeout for calls to this service (3 s by default)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        uri,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        timeoutMS=timeout_ms,
        # Connections made ahead of a burst: each new one costs an authentication handshake.
        minPoolSize=4,
        tz_aware=True,
        appname="infergate",
        event_listeners=[errors] if errors is not None else [],
        **ledger_options(uri),
    )
    return client, client.get_default_database(default=default_db)


class MongoSettings(Protocol):
    """What a database-backed service's settings give `open_service_mongo`."""

    @property
    def service_name(self) -> str: ...

    @property
    def mongo_uri(self) -> str: ...

    @property
    def mongo_timeout_ms(self) -> int: ...


def open_service_mongo(
    settings: MongoSettings, stack: AsyncExitStack, *, registry: CollectorRegistry, default_db: str
) -> tuple[Mongo, AsyncDatabase[dict[str, Any]]]:
    """A service's client (its failures counted in `registry`), closed with the lifespan."""
    client, db = open_mongo(
        settings.mongo_uri,
        default_db=default_db,
        timeout_ms=settings.mongo_timeout_ms,
        errors=MongoErrors.of(registry, service=settings.service_name),
    )
    stack.push_async_callback(client.close)
    _log_concerns(client)
    return client, db


def _log_concerns(client: Mongo) -> None:
    concerns = {
        "write_concern": client.write_concern.document,
        "read_concern": client.read_concern.level,
        "retry_writes": client.options.retry_writes,
        "read_preference": client.read_preference.mongos_mode,
        "replica_set": client.options.replica_set_name,
    }
    _log.info("mongo_client", **concerns)
    if client.write_concern.document.get("w") == 1:
        # Acknowledged by the primary alone: a failover before it replicates undoes the write.
        _log.warning("mongo_writes_not_majority", **concerns)


def install_mongo_error_handler(app: FastAPI) -> None:
    """Answer 503 JSON for `DATABASE_UNAVAILABLE` (never a 500 or a hang)."""

    async def on_database_error(_: Request, exc: Exception) -> JSONResponse:
        _log.warning("database_unavailable", error_type=type(exc).__name__)
        return JSONResponse(error_body("Database unavailable", "database_unavailable"), 503)

    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, on_database_error)


def readiness_router(mongo: Callable[..., Awaitable[Mongo]]) -> APIRouter:
    """`GET /readyz` for a Mongo-backed service: 200 when the database answers a ping, else 503.
    `mongo` is the dependency that gives the service's client."""
    router = APIRouter(tags=["health"])

    @router.get("/readyz", response_model=ReadinessResponse, responses=READINESS_RESPONSES)
    async def readyz(client: Mongo = Depends(mongo)) -> JSONResponse:  # noqa: B008 - `mongo` is local
        """Readiness: the database answers."""
        try:
            await client.admin.command("ping")
        except PyMongoError as exc:
            _log.warning("readiness_failed", error_type=type(exc).__name__)
            return JSONResponse({"status": "unavailable", "checks": {"mongo": "down"}}, 503)
        return JSONResponse({"status": "ready", "checks": {"mongo": "ok"}})

    return router


async def once_more_if_cut(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, and once more if the connection broke under it (an AutoReconnect that is not a
    timeout: seen from SecantusDB under bursts of new authenticated connections, and its "not
    primary" after a step-down, which lacks the label that has PyMongo retry a write). Only for
    operations that are safe to repeat: a write that may already have applied must not apply
    twice (a conditional filter, a unique _id). A database that is away or slow is not retried:
    its 503 stays within the callers' timeouts."""
    try:
        return await call()
    except (ServerSelectionTimeoutError, NetworkTimeout):
        raise
    except AutoReconnect as exc:
        _log.warning("database_connection_broken", error_type=type(exc).__name__)
        return await call()
