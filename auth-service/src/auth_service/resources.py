"""auth-service's long-lived objects, built in one place for the life of the process.

`open_resources` makes the database client and the repositories on it, registers what must be
closed on the lifespan's exit stack, and returns one frozen container; routes reach it through
one typed dependency (`deps.ResourcesDep`)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

from infergate_common.mongo import Mongo, open_service_mongo
from prometheus_client import CollectorRegistry

from auth_service.config import Settings
from auth_service.idempotency import IdempotencyRecords
from auth_service.repository import UserRepository


@dataclass(frozen=True, slots=True)
class Resources:
    settings: Settings
    mongo: Mongo
    users: UserRepository
    idempotency: IdempotencyRecords


async def open_resources(
    settings: Settings, stack: AsyncExitStack, *, registry: CollectorRegistry
) -> Resources:
    """Everything auth-service keeps for its life (indexes ensured); metrics go to `registry`."""
    client, db = open_service_mongo(settings, stack, registry=registry, default_db="infergate-auth")
    users = UserRepository(db["users"])
    idempotency = IdempotencyRecords(db["idempotency"])
    await users.ensure_indexes()
    await idempotency.ensure_indexes()
    return Resources(settings=settings, mongo=client, users=users, idempotency=idempotency)
