"""Internal user routes for the gateway's admin API: find users, change their plan, replace or
revoke their key."""

from __future__ import annotations

import base64
import binascii
import unicodedata
from typing import Annotated

import structlog
from fastapi import APIRouter, Query
from infergate_common.errors import BadRequestError, NotFoundError, error_responses
from infergate_common.validation import Text, UserId, normalize_email

from auth_service.deps import UsersDep
from auth_service.schemas import (
    IssuedKeyResponse,
    PlanRequest,
    RevokedKeyResponse,
    User,
    UserList,
    UserView,
)
from auth_service.security import issue_api_key

router = APIRouter(prefix="/auth/users", tags=["users"])
_log = structlog.get_logger("users")
_MAX_EMAIL = 254


def _found(user: User | None) -> UserView:
    if user is None:
        raise NotFoundError("User not found", code="user_not_found")
    return user.view()


@router.get(
    "",
    response_model=UserList,
    # The exact lookup answers `{"data": [...]}` as it always did; a search adds `nextCursor`.
    response_model_exclude_unset=True,
    responses=error_responses(400),
)
async def find_users(
    users: UsersDep,
    email: Annotated[
        str | None,
        Query(min_length=1, max_length=_MAX_EMAIL, description="Exactly this email (no paging)."),
    ] = None,
    search: Annotated[
        Text | None,
        Query(
            max_length=_MAX_EMAIL,
            description="The start of the email, in any case (a prefix: a substring would scan "
            "every user); empty lists every user.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        str | None, Query(min_length=1, max_length=400, pattern=r"^[A-Za-z0-9_-]+$")
    ] = None,
) -> UserList:
    """The user with this `email` (at most one: emails are unique, compared lower-cased), or a
    page of the users whose email starts with `search`, by email; pass `nextCursor` as `cursor`
    for the next page."""
    if (email is None) == (search is None):
        raise BadRequestError(
            "Give either email (one user) or search (a page of users)", code="validation_error"
        )
    if email is not None:
        return UserList(data=[] if (user := await _by_email(users, email)) is None else [user])
    prefix = unicodedata.normalize("NFC", (search or "").strip()).lower()
    after = None if cursor is None else _decode_cursor(cursor)
    page = await users.search(prefix, limit=limit + 1, after=after)
    shown = page[:limit]
    more = len(page) > limit
    return UserList(
        data=[user.view() for user in shown],
        nextCursor=_encode_cursor(shown[-1].email) if more else None,
    )


async def _by_email(users: UsersDep, email: str) -> UserView | None:
    try:
        normalized = normalize_email(email)
    except ValueError:
        raise BadRequestError("A valid email is required", code="validation_error") from None
    user = await users.find_by_email(normalized)
    return None if user is None else user.view()


def _encode_cursor(email: str) -> str:
    """A page's position: its last email (unique), opaque to callers."""
    return base64.urlsafe_b64encode(email.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        email = raw.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        email = ""
    if not email or len(email) > _MAX_EMAIL or "\x00" in email:
        raise BadRequestError("Invalid cursor", code="invalid_cursor")
    return email


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


@router.delete("/{user_id}/key", response_model=RevokedKeyResponse, responses=error_responses(404))
async def revoke_key(user_id: UserId, users: UsersDep) -> RevokedKeyResponse:
    """Revoke the user's API key without knowing it: the user is left with no working key (a new
    version, stamped, like every key change). Repeating it is harmless: still no key, one more
    version."""
    user = await users.revoke_key_of(user_id=user_id)
    if user is None:
        raise NotFoundError("User not found", code="user_not_found")
    _log.info("api_key_revoked_by_operator", user_id=user_id)
    return RevokedKeyResponse(userId=user.id, version=user.version)
