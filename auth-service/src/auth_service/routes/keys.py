"""Internal key routes: rotate or revoke the key a caller presents (one atomic update each)."""

from __future__ import annotations

import structlog
from fastapi import APIRouter
from infergate_common.errors import UnauthorizedError, error_responses

from auth_service.deps import UsersDep
from auth_service.schemas import KeyRequest, RevokeResponse, RotateResponse
from auth_service.security import issue_api_key, lookup_hash

router = APIRouter(prefix="/auth/keys", tags=["keys"])
_log = structlog.get_logger("keys")


def _invalid_key() -> UnauthorizedError:
    _log.info("invalid_api_key")
    return UnauthorizedError("Invalid API key", code="invalid_api_key")


@router.post("/rotate", response_model=RotateResponse, responses=error_responses(401))
async def rotate(body: KeyRequest, users: UsersDep) -> RotateResponse:
    """Replace the presented key with a new one (returned once); the old one stops working."""
    current = lookup_hash(body.apiKey)
    issued = issue_api_key()
    user = None if current is None else await users.rotate_key(current_hash=current, key=issued)
    if user is None:
        raise _invalid_key()
    _log.info("api_key_rotated", user_id=user.id)
    return RotateResponse(userId=user.id, apiKey=issued.key, plan=user.plan, version=user.version)


@router.post("/revoke", response_model=RevokeResponse, responses=error_responses(401))
async def revoke(body: KeyRequest, users: UsersDep) -> RevokeResponse:
    """Revoke the presented key: the user is left with no working key."""
    current = lookup_hash(body.apiKey)
    user = None if current is None else await users.revoke_key(current_hash=current)
    if user is None:
        raise _invalid_key()
    _log.info("api_key_revoked", user_id=user.id)
    return RevokeResponse(userId=user.id, version=user.version)
