"""Request and response bodies of the auth-service's internal API."""

from __future__ import annotations

from datetime import datetime

from infergate_common.validation import ApiKey, Email, IdempotencyKey, Plan
from pydantic import BaseModel, ConfigDict, Field


class StrictBody(BaseModel):
    # Values are taken exactly as sent (emails are normalised by their own type): trimming would
    # give one API key several spellings.
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(StrictBody):
    email: Email
    # The same key within 24 hours returns the same result, the same API key included.
    idempotencyKey: IdempotencyKey | None = None


class RegisterResponse(BaseModel):
    message: str
    userId: str
    apiKey: str
    plan: Plan


class VerifyRequest(StrictBody):
    apiKey: ApiKey


class VerifyResponse(BaseModel):
    valid: bool
    userId: str
    plan: Plan
    version: int = Field(description="Counts the user's key and plan changes")


class KeyRequest(StrictBody):
    """The caller's current key (to rotate or revoke it)."""

    apiKey: ApiKey


class RotateRequest(KeyRequest):
    # The same key within 24 hours returns the same new API key.
    idempotencyKey: IdempotencyKey | None = None


class IssuedKeyResponse(BaseModel):
    """A key an operator issued for a user (shown once)."""

    message: str = "API key issued"
    userId: str
    apiKey: str
    plan: Plan
    version: int


class UserChange(BaseModel):
    userId: str
    version: int


class UserChanges(BaseModel):
    """Key and plan changes since `since`, and where to continue from (`until`)."""

    changes: list[UserChange]
    until: int = Field(description="Milliseconds since the epoch: the next `since`.")


class RotateResponse(BaseModel):
    message: str = "API key rotated"
    userId: str
    apiKey: str
    plan: Plan
    version: int


class RevokeResponse(BaseModel):
    message: str = "API key revoked"
    userId: str
    version: int


class PlanRequest(StrictBody):
    plan: Plan


class UserView(BaseModel):
    """A user as operators see it: never the key or its hash; `keyPrefix` is null once revoked."""

    userId: str
    email: str
    plan: Plan
    keyPrefix: str | None
    createdAt: datetime
    version: int


class UserList(BaseModel):
    data: list[UserView]
    nextCursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page (null on the last one)."
    )


class RevokedKeyResponse(BaseModel):
    """An operator's revocation of a user's key."""

    message: str = "API key revoked"
    userId: str
    version: int


class User(BaseModel):
    """A user document as the repository returns it (never the key itself)."""

    id: str
    email: str
    key_prefix: str | None
    plan: Plan
    created_at: datetime
    version: int

    def view(self) -> UserView:
        return UserView(
            userId=self.id,
            email=self.email,
            plan=self.plan,
            keyPrefix=self.key_prefix,
            createdAt=self.created_at,
            version=self.version,
        )
