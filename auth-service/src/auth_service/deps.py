"""Typed dependencies of auth-service's routes."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from auth_service.repository import UserRepository


async def get_user_repository(request: Request) -> UserRepository:
    return cast(UserRepository, request.state.users)


UsersDep = Annotated[UserRepository, Depends(get_user_repository)]
