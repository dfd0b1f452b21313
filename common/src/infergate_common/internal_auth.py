"""The shared-token guard every internal service puts in front of its routes."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Header
from pydantic import SecretStr

from infergate_common.errors import UnauthorizedError, error_responses

INTERNAL_TOKEN_HEADER = "x-internal-token"
# Every guarded route can answer 401 (for its OpenAPI: include the router with these).
INTERNAL_AUTH_RESPONSES = error_responses(401)


def internal_token_guard(expected: SecretStr) -> Callable[[str | None], Awaitable[None]]:
    """A dependency refusing any call whose x-internal-token differs (constant-time compare)."""
    expected_bytes = expected.get_secret_value().encode()

    async def guard(
        x_internal_token: str | None = Header(default=None, include_in_schema=False),
    ) -> None:
        given = (x_internal_token or "").encode()
        if not hmac.compare_digest(given, expected_bytes):
            raise UnauthorizedError(
                "Internal token missing or invalid", code="internal_auth_failed"
            )

    return guard
