"""Internal key routes: rotate or revoke the key a caller presents (one atomic update each)."""

from __future__ import annotations

import structlog
from fastapi import APIRouter
from infergate_common.errors import UnauthorizedError, error_responses

from auth_service.deps import IdempotencyDep, SettingsDep, UsersDep
from auth_service.idempotency import IdempotencyRecords
from auth_service.repository import UserRepository
from auth_service.schemas import KeyRequest, RevokeResponse, RotateRequest, RotateResponse, User
from auth_service.security import (
    IssuedKey,
    derive_api_key,
    issue_api_key,
    lookup_hash,
    request_fingerprint,
)

router = APIRouter(prefix="/auth/keys", tags=["keys"])
_log = structlog.get_logger("keys")


def _invalid_key() -> UnauthorizedError:
    _log.info("invalid_api_key")
    return UnauthorizedError("Invalid API key", code="invalid_api_key")


@router.post("/rotate", response_model=RotateResponse, responses=error_responses(401))
async def rotate(
    body: RotateRequest, users: UsersDep, records: IdempotencyDep, settings: SettingsDep
) -> RotateResponse:
    """Replace the presented key with a new one (returned once); the old one stops working.
    With an idempotency key, a repeat within 24 hours (with the old key) returns the same new
    key."""
    current = lookup_hash(body.apiKey)
    if current is None:
        raise _invalid_key()
    if body.idempotencyKey is None:
        issued = issue_api_key()
        user = await users.rotate_key(current_hash=current, key=issued)
    else:
        secret = settings.key_derivation_secret.get_secret_value()
        issued = derive_api_key(secret, "rotate", current, body.idempotencyKey)
        fingerprint = request_fingerprint("rotate", current, body.idempotencyKey)
        user = await _rotate_once(users, records, current, issued, fingerprint)
    if user is None:
        raise _invalid_key()
    _log.info("api_key_rotated", user_id=user.id)
    return RotateResponse(userId=user.id, apiKey=issued.key, plan=user.plan, version=user.version)


async def _rotate_once(
    users: UserRepository,
    records: IdempotencyRecords,
    current: str,
    issued: IssuedKey,
    fingerprint: str,
) -> User | None:
    """Rotate `current` to `issued` unless this request did already; the user, or None when
    `current` is not a key (and never was this request's)."""
    holder = await users.find_by_key_hash(current)
    if holder is not None:
        await records.claim(fingerprint, user_id=holder.id)
        rotated = await users.rotate_key(current_hash=current, key=issued)
        if rotated is not None:
            return rotated
    # The old key no longer works: this request's rotation may be why (a repeat).
    user_id = await records.user_of(fingerprint)
    return None if user_id is None else await users.holds_key(user_id, issued.key_hash)


@router.post("/revoke", response_model=RevokeResponse, responses=error_responses(401))
async def revoke(body: KeyRequest, users: UsersDep) -> RevokeResponse:
    """Revoke the presented key: the user is left with no working key."""
    current = lookup_hash(body.apiKey)
    user = None if current is None else await users.revoke_key(current_hash=current)
    if user is None:
        raise _invalid_key()
    _log.info("api_key_revoked", user_id=user.id)
    return RevokeResponse(userId=user.id, version=user.version)
