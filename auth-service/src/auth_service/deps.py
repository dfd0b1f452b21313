"""Typed dependencies of auth-service's routes."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from auth_service.config import Settings
from auth_service.idempotency import IdempotencyRecords
from auth_service.repository import UserRepository


async def get_user_repository(request: Request) -> UserRepository:
    return cast(UserRepository, request.state.users)


async def get_idempotency_records(request: Request) -> IdempotencyRecords:
    return cast(IdempotencyRecords, request.state.idempotency)


async def get_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


UsersDep = Annotated[UserRepository, Depends(get_user_repository)]
IdempotencyDep = Annotated[IdempotencyRecords, Depends(get_idempotency_records)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
