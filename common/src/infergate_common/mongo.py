"""Opening the MongoDB client the services share the shape of (PyMongo's async API)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase


def open_mongo(uri: str, *, default_db: str, timeout_ms: int) -> tuple[
    AsyncMongoClient[dict[str, Any]], AsyncDatabase[dict[str, Any]]
]:
    """A client with bounded timeouts (so a stopped server means a quick 503, never a hang)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        uri,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=timeout_ms * 2,
        timeoutMS=timeout_ms * 2,
        tz_aware=True,
        appname="infergate",
    )
    return client, client.get_default_database(default=default_db)
