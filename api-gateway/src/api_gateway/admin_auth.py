"""The admin API's guard: ADMIN_TOKEN as a Bearer token or in x-admin-token."""

from __future__ import annotations

import hmac
from typing import Annotated

import structlog
from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from infergate_common.errors import NotFoundError, UnauthorizedError

from api_gateway.deps import SettingsDep

_log = structlog.get_logger("admin")
_admin_header = APIKeyHeader(
    name="x-admin-token", auto_error=False, scheme_name="AdminToken", description="ADMIN_TOKEN"
)
_admin_bearer = HTTPBearer(auto_error=False, scheme_name="AdminBearer", description="ADMIN_TOKEN")


async def require_admin(
    settings: SettingsDep,
    header: Annotated[str | None, Security(_admin_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_admin_bearer)] = None,
) -> None:
    """401 unless the caller sent ADMIN_TOKEN (constant-time compare); 404 when it is not set."""
    expected = settings.admin_token.get_secret_value().encode()
    if not expected:
        raise NotFoundError()
    given = (header or (bearer.credentials if bearer else "")).encode()
    if not hmac.compare_digest(given, expected):
        _log.warning("admin_auth_failed")
        raise UnauthorizedError("Admin token missing or invalid", code="admin_auth_failed")
