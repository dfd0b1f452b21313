"""Internal auth routes: register a user and verify an API key."""

from __future__ import annotations

import structlog
from bson import ObjectId
from fastapi import APIRouter, status
from infergate_common.errors import ConflictError, UnauthorizedError, error_responses
from infergate_common.validation import Plan

from auth_service.deps import IdempotencyDep, SettingsDep, UsersDep
from auth_service.repository import EmailTakenError
from auth_service.schemas import (
    RegisterRequest,
    RegisterResponse,
    User,
    VerifyRequest,
    VerifyResponse,
)
from auth_service.security import derive_api_key, issue_api_key, lookup_hash, request_fingerprint

router = APIRouter(prefix="/auth", tags=["auth"])
_log = structlog.get_logger("auth")


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=RegisterResponse,
    responses=error_responses(409),
)
async def register(
    body: RegisterRequest, users: UsersDep, records: IdempotencyDep, settings: SettingsDep
) -> RegisterResponse:
    """Create a FREE user and return its API key (the only time the key is shown). With an
    idempotency key, a repeat within 24 hours returns the same answer, the same key included."""
    user_id, key = None, issue_api_key()
    if body.idempotencyKey is not None:
        secret = settings.key_derivation_secret.get_secret_value()
        key = derive_api_key(secret, "register", body.email, body.idempotencyKey)
        fingerprint = request_fingerprint("register", body.email, body.idempotencyKey)
        user_id = await records.claim(fingerprint, user_id=str(ObjectId()))
        if await users.find_by_id(user_id) is not None:  # the first request got this far
            holder = await users.holds_key(user_id, key.key_hash)
            if holder is None:  # its key was rotated or revoked since: not given again
                raise ConflictError(
                    "This registration was completed and its key has been replaced since",
                    code="idempotency_key_used",
                )
            return _registered(holder, key.key)
    try:
        user = await users.create(email=body.email, key=key, plan=Plan.FREE, user_id=user_id)
    except EmailTakenError:
        _log.info("user_already_exists")
        raise ConflictError("User already exists", code="user_already_exists") from None
    _log.info("user_registered", user_id=user.id, plan=user.plan.value)
    return _registered(user, key.key)


def _registered(user: User, api_key: str) -> RegisterResponse:
    return RegisterResponse(
        message="User registered successfully", userId=user.id, apiKey=api_key, plan=user.plan
    )


@router.post("/verify", response_model=VerifyResponse)
async def verify(body: VerifyRequest, users: UsersDep) -> VerifyResponse:
    """Resolve an API key to its user, by hash."""
    key_hash = lookup_hash(body.apiKey)
    user = None if key_hash is None else await users.find_by_key_hash(key_hash)
    if user is None:
        _log.info("invalid_api_key")
        raise UnauthorizedError("Invalid API key", code="invalid_api_key")
    return VerifyResponse(valid=True, userId=user.id, plan=user.plan, version=user.version)
