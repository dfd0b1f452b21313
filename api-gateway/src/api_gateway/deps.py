"""Typed dependencies of the gateway's routes: the long-lived objects and the caller."""

from __future__ import annotations

import ipaddress
from typing import Annotated, cast

import structlog
from fastapi import Depends, Header, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from infergate_common.errors import UnauthorizedError
from infergate_common.validation import IdempotencyKey, Period

from api_gateway.admission import AccountView
from api_gateway.chat import ChatTurn
from api_gateway.clients import AiClient, AuthClient, UsageClient
from api_gateway.config import Settings
from api_gateway.key_lifecycle import KeyLifecycle, Unconfirmed
from api_gateway.models import ModelCatalog
from api_gateway.overhead import track_model_time
from api_gateway.rate_limit import SlidingWindowLimiter
from api_gateway.resources import Resources
from api_gateway.schemas import VerifiedUser
from api_gateway.settler import Settler

_api_key_header = APIKeyHeader(name="x-api-key", auto_error=False, description="Your API key")
_bearer = HTTPBearer(auto_error=False, description="Your API key, as OpenAI SDKs send it")


def resources_of(request: Request) -> Resources:
    return cast(Resources, request.state.resources)


async def get_resources(request: Request) -> Resources:
    return resources_of(request)


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


async def get_auth_client(resources: ResourcesDep) -> AuthClient:
    return resources.auth


async def get_usage_client(resources: ResourcesDep) -> UsageClient:
    return resources.usage


async def get_ai_client(resources: ResourcesDep) -> AiClient:
    return resources.ai


async def get_limiter(resources: ResourcesDep) -> SlidingWindowLimiter:
    return resources.limiter


async def get_registrations(resources: ResourcesDep) -> SlidingWindowLimiter:
    return resources.registrations


async def get_catalog(resources: ResourcesDep) -> ModelCatalog:
    return resources.catalog


async def get_keys(resources: ResourcesDep) -> KeyLifecycle:
    return resources.keys


async def get_settler(resources: ResourcesDep) -> Settler:
    return resources.settler


SettingsDep = Annotated[Settings, Depends(get_settings)]
AuthClientDep = Annotated[AuthClient, Depends(get_auth_client)]
UsageClientDep = Annotated[UsageClient, Depends(get_usage_client)]
AiClientDep = Annotated[AiClient, Depends(get_ai_client)]
LimiterDep = Annotated[SlidingWindowLimiter, Depends(get_limiter)]
RegistrationLimiterDep = Annotated[SlidingWindowLimiter, Depends(get_registrations)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
KeysDep = Annotated[KeyLifecycle, Depends(get_keys)]
SettlerDep = Annotated[Settler, Depends(get_settler)]


async def get_account_view(request: Request, resources: ResourcesDep) -> AccountView:
    r = resources
    return AccountView(request, r.usage, r.limiter, r.settings, r.settler)


AccountViewDep = Annotated[AccountView, Depends(get_account_view)]


async def presented_api_key(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> str:
    """The key the caller sent in `x-api-key` or `Authorization: Bearer` (401 when none),
    exactly as sent: the parsed forms above trim Unicode spaces (`K\xa0` would become `K`), so
    the value is read from the raw header, and only HTTP's own spaces and tabs are trimmed."""
    if api_key is not None:
        return api_key.strip(" \t")
    if bearer is not None:
        _, _, credentials = request.headers.get("authorization", "").partition(" ")
        if credentials.strip(" \t"):
            return credentials.strip(" \t")
    raise UnauthorizedError("API key missing", code="api_key_missing")


PresentedKey = Annotated[str, Depends(presented_api_key)]


def client_network(request: Request) -> str:
    """Where the caller comes from, as limits count it: nginx's X-Real-IP (the gateway is only
    reachable behind it), an IPv6 address by its /64 (one host usually holds a whole /64)."""
    forwarded = request.headers.get("x-real-ip")
    address = (
        forwarded.strip()[:64] if forwarded else (request.client.host if request.client else "")
    )
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


async def client_address(request: Request) -> str:
    return client_network(request)


ClientAddressDep = Annotated[str, Depends(client_address)]


async def authenticate(request: Request, api_key: PresentedKey) -> VerifiedUser:
    """The caller's user (401 when the key is missing or unknown, 429 when this network keeps
    presenting wrong keys). Reads the resources directly: on the hot path each sub-dependency
    costs."""
    user = await resources_of(request).keys.verify(api_key, network=client_network(request))
    structlog.contextvars.bind_contextvars(user_id=user.userId)
    return user


CurrentUser = Annotated[VerifiedUser, Depends(authenticate)]


async def authenticate_chat(
    request: Request, api_key: PresentedKey
) -> tuple[VerifiedUser, Unconfirmed | None]:
    """`authenticate` for a chat: a cached verification is taken as it is, its version check
    left to the chat's rate-limit count, which makes it in the same Redis round trip (see
    admission.admit); the key is verified before anything is counted, reserved or called (a
    request its body or model refuses, 400 or 404, may be refused so before a stale cached
    verification is found out: nothing of it reaches a model or the ledger either way)."""
    keys = resources_of(request).keys
    network = client_network(request)
    unconfirmed = keys.cached(api_key, network=network)
    user = (
        unconfirmed.user if unconfirmed is not None else await keys.verify(api_key, network=network)
    )
    structlog.contextvars.bind_contextvars(user_id=user.userId)
    return user, unconfirmed


async def new_chat_turn(
    request: Request,
    caller: Annotated[tuple[VerifiedUser, Unconfirmed | None], Depends(authenticate_chat)],
) -> ChatTurn:
    """One chat turn of the authenticated caller (shared by /v1/chat and the OpenAI route)."""
    resources = resources_of(request)
    started, started_at = ChatTurn.now()
    user, unconfirmed = caller
    return ChatTurn(
        settings=resources.settings,
        usage=resources.usage,
        ai=resources.ai,
        billing=resources.billing,
        breakers=resources.breakers,
        user=user,
        request_id=cast(str, request.scope["state"]["request_id"]),
        started=started,
        started_at=started_at,
        telemetry=resources.telemetry,
        model_time=track_model_time(request.scope),
        cache=resources.cache,
        cache_control=request.headers.get("cache-control", ""),
        unconfirmed=unconfirmed,
    )


ChatTurnDep = Annotated[ChatTurn, Depends(new_chat_turn)]


async def idempotency_key(
    idempotency_key: Annotated[
        IdempotencyKey | None,
        Header(
            alias="Idempotency-Key",
            description="Repeat the request with the same key within 24 hours to get the same "
            "result (the same API key included) instead of a second change.",
        ),
    ] = None,
) -> str | None:
    return idempotency_key


IdempotencyKeyDep = Annotated[str | None, Depends(idempotency_key)]
# The month a usage report covers (`?period=YYYY-MM`); this one when absent.
PeriodQuery = Annotated[Period | None, Query(description="YYYY-MM (UTC); this month by default.")]
