"""Value types validated the same way at every boundary that receives them."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field, StringConstraints
from pydantic_core import PydanticCustomError


def normalize_email(value: str) -> str:
    """Trim and lower-case an address after checking its syntax (no DNS lookups)."""
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError("invalid email address") from exc
    return checked.normalized.lower()


# `format: email` tells API clients (and generated tests) the syntax checked here.
Email = Annotated[
    str,
    Field(max_length=254, json_schema_extra={"format": "email"}),
    AfterValidator(normalize_email),
]


def check_text(value: str) -> str:
    """Free text passed on to other services and the model: no NUL, and encodable as UTF-8.
    JSON escapes can spell lone surrogates (`"\\ud800"`), which unconstrained `str` fields
    accept and every later JSON encoding then fails on."""
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "Text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError(
            "string_unicode", "Text must be valid Unicode (no lone surrogates)"
        ) from None
    return value


Text = Annotated[str, AfterValidator(check_text)]
# Ollama reads the sampling seed as a 64-bit integer; a larger one fails there, not here.
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
UserId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{24}$")]
# Keys are "sk_" + 32 random bytes in URL-safe base64 (43 characters), exactly: no other form
# (no surrounding whitespace, no other length) is ever the same key.
_API_KEY = re.compile(r"sk_[A-Za-z0-9_-]{43}")
# What a body may carry as a key; whether it can be one of ours is `is_api_key`'s to say (a
# malformed key is an unknown key, 401, not a malformed request).
ApiKey = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def is_api_key(value: str) -> bool:
    """Whether `value` has the exact form of an InferGate API key."""
    return _API_KEY.fullmatch(value) is not None


RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,128}$")]

# A quota period: a calendar month (UTC) from 1970 on.
_PERIOD = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$"


def check_period(value: str) -> str:
    """One message for every malformed period (the pattern's own would quote a regex)."""
    if re.fullmatch(_PERIOD, value) is None:
        raise PydanticCustomError(
            "period_format", "period must be a calendar month as YYYY-MM (for example 2026-12)"
        )
    return value


Period = Annotated[
    str,
    Field(
        description="A calendar month (UTC), YYYY-MM.",
        json_schema_extra={"pattern": _PERIOD, "examples": ["2026-12"]},
    ),
    AfterValidator(check_period),
]


class Plan(StrEnum):
    """A user's plan: decides the rate limit and the monthly token quota."""

    FREE = "FREE"
    PRO = "PRO"


# A client's `Idempotency-Key`: printable ASCII without spaces, like a UUID or a ULID.
IdempotencyKey = Annotated[str, StringConstraints(pattern=r"^[!-~]{1,255}$")]
