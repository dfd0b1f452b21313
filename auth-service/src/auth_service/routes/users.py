"""Internal user routes for the gateway's admin API: look users up and change their plan."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Query
from infergate_common.errors import BadRequestError, NotFoundError, error_responses
from infergate_common.validation import UserId, normalize_email

from auth_service.deps import UsersDep
from auth_service.schemas import IssuedKeyResponse, PlanRequest, User, UserList, UserView
from auth_service.security import issue_api_key

router = APIRouter(prefix="/auth/users", tags=["users"])
_log = structlog.get_logger("users")


def _found(user: User | None) -> UserView:
    if user is None:
        raise NotFoundError("User not found", code="user_not_found")
    return user.view()


@router.get("", response_model=UserList, responses=error_responses(400))
async def find_users(
    users: UsersDep, email: Annotated[str, Query(min_length=1, max_length=254)]
) -> UserList:
    """The users with this email (at most one: emails are unique, compared lower-cased)."""
    try:
        normalized = normalize_email(email)
    except ValueError:
        raise BadRequestError("A valid email is required", code="validation_error") from None
    user = await users.find_by_email(normalized)
    return UserList(data=[] if user is None else [user.view()])


@router.get("/{user_id}", response_model=UserView, responses=error_responses(404))
async def get_user(user_id: UserId, users: UsersDep) -> UserView:
    """One user, by id."""
    return _found(await users.find_by_id(user_id))


@router.put("/{user_id}/plan", response_model=UserView, responses=error_responses(404))
async def set_plan(user_id: UserId, body: PlanRequest, users: UsersDep) -> UserView:
    """Move the user to another plan (the gateway's next verification sees it)."""
    view = _found(await users.set_plan(user_id=user_id, plan=body.plan))
    _log.info("plan_changed", user_id=user_id, plan=body.plan.value)
    return view


@router.post("/{user_id}/key", response_model=IssuedKeyResponse, responses=error_responses(404))
async def issue_key(user_id: UserId, users: UsersDep) -> IssuedKeyResponse:
    """Give the user a new API key (shown once), whatever their current one: the operator's way
    back for a user whose key was lost or revoked. Their previous key stops working."""
    issued = issue_api_key()
    user = await users.replace_key(user_id=user_id, key=issued)
    if user is None:
        raise NotFoundError("User not found", code="user_not_found")
    _log.info("api_key_issued", user_id=user_id)
    return IssuedKeyResponse(
        userId=user.id, apiKey=issued.key, plan=user.plan, version=user.version
    )
