"""Your API key: rotate it (a new one, shown once) or revoke it."""

from __future__ import annotations

from fastapi import APIRouter
from infergate_common.errors import error_responses

from api_gateway.deps import AccountViewDep, IdempotencyKeyDep, KeysDep, PresentedKey
from api_gateway.schemas import KeyRevoked, RotatedKey

router = APIRouter(prefix="/v1/keys", tags=["keys"])
_ERRORS = error_responses(401, 429, 503, 504)


@router.post("/rotate", response_model=RotatedKey, responses=_ERRORS)
async def rotate_key(
    api_key: PresentedKey, keys: KeysDep, idempotency_key: IdempotencyKeyDep, view: AccountViewDep
) -> RotatedKey:
    """Replace your API key: the new one is shown once and the old one stops working at once,
    on every gateway replica. Send an `Idempotency-Key` to be able to repeat the call safely:
    a repeat with the old key within 24 hours returns the same new key."""
    owner = await keys.whose(api_key)
    rotated = await keys.rotate(api_key, idempotency_key=idempotency_key, owner=owner)
    if owner is not None:
        await view.show_limits(owner)
    return rotated


@router.delete("/current", response_model=KeyRevoked, responses=_ERRORS)
async def revoke_key(api_key: PresentedKey, keys: KeysDep, view: AccountViewDep) -> KeyRevoked:
    """Revoke the API key you call with: afterwards it is refused (401) on every gateway
    replica."""
    owner = await keys.whose(api_key)
    await keys.revoke(api_key, owner=owner)
    if owner is not None:
        await view.show_limits(owner)
    return KeyRevoked()
