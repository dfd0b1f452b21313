"""Internal auth routes: register a user and verify an API key."""

from __future__ import annotations

import structlog
from fastapi import APIRouter, status
from infergate_common.errors import ConflictError, UnauthorizedError, error_responses
from infergate_common.validation import Plan

from auth_service.deps import UsersDep
from auth_service.repository import EmailTakenError
from auth_service.schemas import RegisterRequest, RegisterResponse, VerifyRequest, VerifyResponse
from auth_service.security import issue_api_key, lookup_hash

router = APIRouter(prefix="/auth", tags=["auth"])
_log = structlog.get_logger("auth")


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=RegisterResponse,
    responses=error_responses(409),
)
async def register(body: RegisterRequest, users: UsersDep) -> RegisterResponse:
    """Create a FREE user and return its API key (the only time the key is shown)."""
    key = issue_api_key()
    try:
        user = await users.create(email=body.email, key=key, plan=Plan.FREE)
    except EmailTakenError:
        _log.info("user_already_exists")
        raise ConflictError("User already exists", code="user_already_exists") from None
    _log.info("user_registered", user_id=user.id, plan=user.plan.value)
    return RegisterResponse(
        message="User registered successfully", userId=user.id, apiKey=key.key, plan=user.plan
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
