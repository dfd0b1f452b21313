"""Typed dependencies of auth-service's routes: all from the one `Resources` container."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from infergate_common.app import resources_dependency
from infergate_common.mongo import Mongo

from auth_service.config import Settings
from auth_service.idempotency import IdempotencyRecords
from auth_service.repository import UserRepository
from auth_service.resources import Resources

get_resources = resources_dependency(Resources)
ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_user_repository(resources: ResourcesDep) -> UserRepository:
    return resources.users


async def get_idempotency_records(resources: ResourcesDep) -> IdempotencyRecords:
    return resources.idempotency


async def get_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


async def get_mongo(resources: ResourcesDep) -> Mongo:
    return resources.mongo


UsersDep = Annotated[UserRepository, Depends(get_user_repository)]
IdempotencyDep = Annotated[IdempotencyRecords, Depends(get_idempotency_records)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
