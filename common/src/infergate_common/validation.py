"""Value types validated the same way at every boundary that receives them."""

from __future__ import annotations

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
# Keys are "sk_" + url-safe base64; anything else cannot be one of ours.
ApiKey = Annotated[str, StringConstraints(min_length=1, max_length=256)]
RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,128}$")]


class Plan(StrEnum):
    """A user's plan: decides the rate limit and the monthly token quota."""

    FREE = "FREE"
    PRO = "PRO"
