"""Your API key: rotate it (a new one, shown once) or revoke it."""

from __future__ import annotations

import structlog
from fastapi import APIRouter
from infergate_common.errors import error_responses

from api_gateway.deps import AuthClientDep, KeyCacheDep, KeyVersionsDep, PresentedKey
from api_gateway.schemas import KeyRevoked, RotatedKey

router = APIRouter(prefix="/v1/keys", tags=["keys"])
_log = structlog.get_logger("keys")
_ERRORS = error_responses(401, 503, 504)


@router.post("/rotate", response_model=RotatedKey, responses=_ERRORS)
async def rotate_key(
    api_key: PresentedKey, auth: AuthClientDep, cache: KeyCacheDep, versions: KeyVersionsDep
) -> RotatedKey:
    """Replace your API key: the new one is shown once and the old one stops working at once,
    on every gateway replica."""
    try:
        change, rotated = await auth.rotate(api_key)
    finally:
        # Even when the outcome is unknown (a timeout): the next use is verified afresh.
        cache.invalidate(api_key)
    await versions.announce(change.user_id, change.version)
    structlog.contextvars.bind_contextvars(user_id=change.user_id)
    _log.info("api_key_rotated")
    return rotated


@router.delete("/current", response_model=KeyRevoked, responses=_ERRORS)
async def revoke_key(
    api_key: PresentedKey, auth: AuthClientDep, cache: KeyCacheDep, versions: KeyVersionsDep
) -> KeyRevoked:
    """Revoke the API key you call with: afterwards it is refused (401) on every gateway
    replica."""
    try:
        change = await auth.revoke(api_key)
    finally:
        cache.invalidate(api_key)
    await versions.announce(change.user_id, change.version)
    structlog.contextvars.bind_contextvars(user_id=change.user_id)
    _log.info("api_key_revoked")
    return KeyRevoked()
