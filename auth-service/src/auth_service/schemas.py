"""Request and response bodies of the auth-service's internal API."""

from __future__ import annotations

from datetime import datetime

from infergate_common.validation import ApiKey, Email, Plan
from pydantic import BaseModel, ConfigDict


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


class User(BaseModel):
    """A user document as the repository returns it (never the key itself)."""

    id: str
    email: str
    key_prefix: str
    plan: Plan
    created_at: datetime
