"""Value types validated the same way at every boundary that receives them."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field, StringConstraints


def normalize_email(value: str) -> str:
    """Trim and lower-case an address after checking its syntax (no DNS lookups)."""
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError("invalid email address") from exc
    return checked.normalized.lower()


Email = Annotated[str, Field(max_length=254), AfterValidator(normalize_email)]
UserId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{24}$")]
# Keys are "sk_" + url-safe base64; anything else cannot be one of ours.
ApiKey = Annotated[str, StringConstraints(min_length=1, max_length=256)]
RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,128}$")]


class Plan(StrEnum):
    """A user's plan: decides the rate limit and the monthly token quota."""

    FREE = "FREE"
    PRO = "PRO"
