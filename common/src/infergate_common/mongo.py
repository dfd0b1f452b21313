"""Opening the MongoDB client the services share the shape of (PyMongo's async API)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pymongo import AsyncMongoClient
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

_log = structlog.get_logger("mongo")
T = TypeVar("T")
# What every database-backed route can answer when the database is down (for its OpenAPI).
DATABASE_ERROR_RESPONSES = error_responses(503)


def open_mongo(
    uri: str, *, default_db: str, timeout_ms: int
) -> tuple[AsyncMongoClient[dict[str, Any]], AsyncDatabase[dict[str, Any]]]:
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
    )
    return client, client.get_default_database(default=default_db)


def install_mongo_error_handler(app: FastAPI) -> None:
    """Answer 503 JSON when the database cannot be reached or times out (never a 500 or a hang)."""

    async def on_database_error(_: Request, exc: Exception) -> JSONResponse:
        _log.warning("database_unavailable", error_type=type(exc).__name__)
        return JSONResponse(error_body("Database unavailable", "database_unavailable"), 503)

    for error in (ConnectionFailure, ExecutionTimeout, WTimeoutError):
        app.add_exception_handler(error, on_database_error)


def readiness_router() -> APIRouter:
    """`GET /readyz` for a Mongo-backed service: 200 when the database answers a ping, else 503."""
    router = APIRouter(tags=["health"])

    @router.get("/readyz", response_model=ReadinessResponse, responses=READINESS_RESPONSES)
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: the database answers."""
        client: AsyncMongoClient[dict[str, Any]] = request.state.mongo
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
