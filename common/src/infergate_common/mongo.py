"""Opening the MongoDB client the services share the shape of (PyMongo's async API)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, Protocol, TypeVar

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
    WTimeoutError,
)

from infergate_common.app import READINESS_RESPONSES, ReadinessResponse
from infergate_common.errors import error_body, error_responses
from infergate_common.metrics import MetricsOff, counter

_log = structlog.get_logger("mongo")
T = TypeVar("T")
# What every database-backed route can answer when the database is down (for its OpenAPI).
DATABASE_ERROR_RESPONSES = error_responses(503)


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


def open_mongo(
    uri: str, *, default_db: str, timeout_ms: int, errors: MongoErrors | None = None
) -> tuple[Mongo, AsyncDatabase[dict[str, Any]]]:
    """A client with bounded timeouts (so a stopped server means a quick 503, never a hang).

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
    return client, db


def install_mongo_error_handler(app: FastAPI) -> None:
    """Answer 503 JSON when the database cannot be reached or times out (never a 500 or a hang)."""

    async def on_database_error(_: Request, exc: Exception) -> JSONResponse:
        _log.warning("database_unavailable", error_type=type(exc).__name__)
        return JSONResponse(error_body("Database unavailable", "database_unavailable"), 503)

    for error in (ConnectionFailure, ExecutionTimeout, WTimeoutError):
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
    timeout: seen from SecantusDB under bursts of new authenticated connections). Only for
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
