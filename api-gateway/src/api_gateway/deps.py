"""Typed dependencies of the gateway's routes: settings, clients, limiter and the caller."""

from __future__ import annotations

from typing import Annotated, cast

import structlog
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from infergate_common.errors import UnauthorizedError

from api_gateway.billing import Billing
from api_gateway.chat import ChatTurn
from api_gateway.circuit_breaker import CircuitBreaker
from api_gateway.clients import AiClient, AuthClient, UsageClient
from api_gateway.config import Settings
from api_gateway.key_cache import VerifiedKeyCache
from api_gateway.key_versions import KeyVersions
from api_gateway.models import ModelCatalog
from api_gateway.rate_limit import SlidingWindowLimiter
from api_gateway.schemas import VerifiedUser
from api_gateway.settler import Settler

_log = structlog.get_logger("auth")
_api_key_header = APIKeyHeader(name="x-api-key", auto_error=False, description="Your API key")
_bearer = HTTPBearer(auto_error=False, description="Your API key, as OpenAI SDKs send it")


async def get_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


async def get_auth_client(request: Request) -> AuthClient:
    return cast(AuthClient, request.state.auth_client)


async def get_usage_client(request: Request) -> UsageClient:
    return cast(UsageClient, request.state.usage_client)


async def get_ai_client(request: Request) -> AiClient:
    return cast(AiClient, request.state.ai_client)


async def get_settler(request: Request) -> Settler:
    return cast(Settler, request.state.settler)


async def get_limiter(request: Request) -> SlidingWindowLimiter:
    return cast(SlidingWindowLimiter, request.state.limiter)


async def get_catalog(request: Request) -> ModelCatalog:
    return cast(ModelCatalog, request.state.catalog)


async def get_key_cache(request: Request) -> VerifiedKeyCache:
    return cast(VerifiedKeyCache, request.state.key_cache)


async def get_key_versions(request: Request) -> KeyVersions:
    return cast(KeyVersions, request.state.key_versions)


SettingsDep = Annotated[Settings, Depends(get_settings)]
AuthClientDep = Annotated[AuthClient, Depends(get_auth_client)]
UsageClientDep = Annotated[UsageClient, Depends(get_usage_client)]
AiClientDep = Annotated[AiClient, Depends(get_ai_client)]
LimiterDep = Annotated[SlidingWindowLimiter, Depends(get_limiter)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
KeyCacheDep = Annotated[VerifiedKeyCache, Depends(get_key_cache)]
KeyVersionsDep = Annotated[KeyVersions, Depends(get_key_versions)]
SettlerDep = Annotated[Settler, Depends(get_settler)]


async def presented_api_key(
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> str:
    """The key the caller sent in `x-api-key` or `Authorization: Bearer` (401 when none)."""
    api_key = api_key or (bearer.credentials if bearer else None)
    if not api_key:
        raise UnauthorizedError("API key missing", code="api_key_missing")
    return api_key


PresentedKey = Annotated[str, Depends(presented_api_key)]


async def authenticate(request: Request, api_key: PresentedKey) -> VerifiedUser:
    """The caller's user (401 when the key is missing or unknown).

    A cached verification is used while the user's version in Redis is not newer (one GET);
    otherwise auth-service verifies the key, and the version it saw is announced. (The clients
    are read from the request state directly: on the hot path each sub-dependency costs.)"""
    state = request.state
    cache = cast(VerifiedKeyCache, state.key_cache)
    versions = cast(KeyVersions, state.key_versions)
    auth = cast(AuthClient, state.auth_client)
    cached = cache.get(api_key)
    if cached is None or not await versions.is_current(cached.user.userId, cached.version, api_key):
        started = cache.now()
        cached = await auth.verify(api_key)
        if await versions.may_cache(cached.user.userId, cached.version, api_key):
            cache.put(api_key, cached, verified_at=started)
        # else: a newer change was announced meanwhile, the key is in doubt, or Redis is away.
    structlog.contextvars.bind_contextvars(user_id=cached.user.userId)
    return cached.user


CurrentUser = Annotated[VerifiedUser, Depends(authenticate)]


async def new_chat_turn(request: Request, user: CurrentUser) -> ChatTurn:
    """One chat turn of the authenticated caller (shared by /v1/chat and the OpenAI route)."""
    state = request.state
    started, started_at = ChatTurn.now()
    return ChatTurn(
        settings=cast(Settings, request.app.state.settings),
        usage=cast(UsageClient, state.usage_client),
        ai=cast(AiClient, state.ai_client),
        billing=cast(Billing, state.billing),
        user=user,
        request_id=cast(str, request.scope["state"]["request_id"]),
        breaker=cast(CircuitBreaker, state.breaker),
        started=started,
        started_at=started_at,
    )


ChatTurnDep = Annotated[ChatTurn, Depends(new_chat_turn)]


async def client_address(request: Request) -> str:
    """The caller's address: nginx's X-Real-IP (the gateway is reachable only behind it)."""
    forwarded = request.headers.get("x-real-ip")
    if forwarded:
        return forwarded.strip()[:64]
    return request.client.host if request.client else "unknown"


ClientAddressDep = Annotated[str, Depends(client_address)]
