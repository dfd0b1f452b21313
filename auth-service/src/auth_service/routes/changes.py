"""Internal route the gateways follow: every change of what a key verifies to, from the users'
own documents (stamped in the same update as the change), so a revocation or a plan change
reaches every gateway even if the one that made it never announced it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from auth_service.deps import UsersDep
from auth_service.schemas import UserChange, UserChanges

router = APIRouter(prefix="/auth", tags=["changes"])
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PAGE = 1000


@router.get("/changes", response_model=UserChanges)
async def changes(
    users: UsersDep,
    since: Annotated[int, Query(ge=0, le=253_402_300_799_999, description="ms since the epoch")],
) -> UserChanges:
    """Key and plan changes stamped at or after `since` (at most 1,000, oldest first); `until`
    is where to continue from."""
    seen = await users.changes_since(_EPOCH + timedelta(milliseconds=since), limit=_PAGE)
    # More to come: continue from the last one seen; else from now.
    until = seen[-1].changed_at if len(seen) == _PAGE else datetime.now(UTC)
    return UserChanges(
        changes=[UserChange(userId=c.user_id, version=c.version) for c in seen],
        until=int((until.astimezone(UTC) - _EPOCH) / timedelta(milliseconds=1)),
    )
