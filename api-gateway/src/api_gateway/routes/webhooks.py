"""Quota alerts by webhook: your webhook's URL and thresholds, its signing secret, and the log of
what was delivered to it. usage-service keeps them, detects the crossings and delivers.

Changes count against your rate limit (setting a URL resolves its host); reads do not. All carry
the rate-limit headers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from infergate_common.errors import error_responses
from infergate_common.webhooks import Deliveries, Webhook, WebhookSettings

from api_gateway.admission import count_request, show_window
from api_gateway.deps import CurrentUser, LimiterDep, SettingsDep, UsageClientDep
from api_gateway.schemas import VerifiedUser
from api_gateway.webhook_client import WebhookClient

router = APIRouter(prefix="/v1/webhook", tags=["webhooks"])
_READ_ERRORS = error_responses(401, 503, 504)


async def get_webhook_client(usage: UsageClientDep) -> WebhookClient:
    return WebhookClient(usage)


WebhookClientDep = Annotated[WebhookClient, Depends(get_webhook_client)]


async def counted(
    request: Request, user: CurrentUser, limiter: LimiterDep, settings: SettingsDep
) -> VerifiedUser:
    """The caller, this request counted in their rate-limit window (429 when it is full)."""
    await count_request(request, limiter, settings, user)
    return user


async def peeked(
    request: Request, user: CurrentUser, limiter: LimiterDep, settings: SettingsDep
) -> VerifiedUser:
    """The caller, their window shown in the headers without counting this request."""
    await show_window(request, limiter, settings, user)
    return user


CountedUser = Annotated[VerifiedUser, Depends(counted)]
PeekedUser = Annotated[VerifiedUser, Depends(peeked)]


@router.put(
    "",
    response_model=Webhook,
    response_model_exclude_none=True,
    responses=error_responses(400, 401, 409, 429, 503, 504),
)
async def put_webhook(
    body: WebhookSettings, user: CountedUser, webhooks: WebhookClientDep
) -> Webhook:
    """Set your webhook: an http(s) URL that resolves to public addresses only (400 otherwise),
    and the percentages of your monthly quota to be told about (default 80 and 100). The
    signing secret (`whsec_...`) is in the answer that creates the webhook, and only there."""
    return await webhooks.put(user.userId, body)


@router.get(
    "",
    response_model=Webhook,
    response_model_exclude_none=True,
    responses=error_responses(401, 404, 503, 504),
)
async def get_webhook(user: PeekedUser, webhooks: WebhookClientDep) -> Webhook:
    """Your webhook (its secret is never shown again)."""
    return await webhooks.get(user.userId)


@router.delete("", responses=error_responses(401, 404, 429, 503, 504))
async def delete_webhook(user: CountedUser, webhooks: WebhookClientDep) -> dict[str, str]:
    """Remove your webhook: nothing more is sent to it."""
    await webhooks.delete(user.userId)
    return {"message": "Webhook removed"}


@router.post("/secret", response_model=Webhook, responses=error_responses(401, 404, 429, 503, 504))
async def rotate_secret(user: CountedUser, webhooks: WebhookClientDep) -> Webhook:
    """A new signing secret, shown in this answer only; events are signed with it from now on."""
    return await webhooks.rotate_secret(user.userId)


@router.get("/deliveries", response_model=Deliveries, responses=_READ_ERRORS)
async def deliveries(
    user: PeekedUser,
    webhooks: WebhookClientDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Deliveries:
    """The events sent to your webhook, newest first: status (pending, delivered, failed),
    attempts with their answers, and when the next attempt is due."""
    return await webhooks.deliveries(user.userId, limit=limit)
