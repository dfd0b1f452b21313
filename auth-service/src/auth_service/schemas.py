"""Request and response bodies of the auth-service's internal API."""

from __future__ import annotations

from datetime import datetime

from infergate_common.validation import ApiKey, Email, Plan
from pydantic import BaseModel, ConfigDict, Field


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class RegisterRequest(StrictBody):
    email: Email


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
