"""Your API key: rotate it (a new one, shown once) or revoke it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import structlog
from fastapi import APIRouter
from infergate_common.errors import AppError, error_responses

from api_gateway.clients import UserChange
from api_gateway.deps import AuthClientDep, KeyCacheDep, KeyVersionsDep, PresentedKey
from api_gateway.key_cache import VerifiedKeyCache
from api_gateway.key_versions import KeyVersions
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
    async with _key_change(api_key, cache, versions):
        change, rotated = await auth.rotate(api_key)
    await _announce(change, versions)
    structlog.contextvars.bind_contextvars(user_id=change.user_id)
    _log.info("api_key_rotated")
    return rotated


@router.delete("/current", response_model=KeyRevoked, responses=_ERRORS)
async def revoke_key(
    api_key: PresentedKey, auth: AuthClientDep, cache: KeyCacheDep, versions: KeyVersionsDep
) -> KeyRevoked:
    """Revoke the API key you call with: afterwards it is refused (401) on every gateway
    replica."""
    async with _key_change(api_key, cache, versions):
        change = await auth.revoke(api_key)
    await _announce(change, versions)
    structlog.contextvars.bind_contextvars(user_id=change.user_id)
    _log.info("api_key_revoked")
    return KeyRevoked()


@asynccontextmanager
async def _key_change(
    api_key: str, cache: VerifiedKeyCache, versions: KeyVersions
) -> AsyncIterator[None]:
    """Around auth-service's change of `api_key`. This replica forgets the key whatever happens.
    If the outcome is unknown (auth-service failed or timed out, or the caller went away
    meanwhile) the change may have happened without the gateway learning the new version: the
    key is then marked in doubt, so no replica uses a cached verification of it until every
    one has expired. A 4xx means nothing changed."""
    try:
        yield
    except BaseException as exc:
        if not (isinstance(exc, AppError) and exc.status_code < 500):
            with anyio.CancelScope(shield=True):
                await versions.doubt(api_key, seconds=cache.ttl)
        raise
    finally:
        cache.invalidate(api_key)


async def _announce(change: UserChange, versions: KeyVersions) -> None:
    # Shielded: a caller leaving now must not keep the other replicas from learning it.
    with anyio.CancelScope(shield=True):
        await versions.announce(change.user_id, change.version)
