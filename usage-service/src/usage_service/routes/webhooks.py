"""Internal webhook routes: a user's quota-alert webhook and its delivery log (the gateway calls
them for `/v1/webhook`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from infergate_common.errors import error_responses
from infergate_common.validation import UserId
from infergate_common.webhooks import Deliveries, Webhook, WebhookSettings

from usage_service.deps import ResourcesDep
from usage_service.webhooks import Webhooks

router = APIRouter(prefix="/usage/{user_id}/webhook", tags=["webhooks"])


async def get_webhooks(resources: ResourcesDep) -> Webhooks:
    return resources.webhooks


WebhooksDep = Annotated[Webhooks, Depends(get_webhooks)]


@router.put(
    "",
    response_model=Webhook,
    response_model_exclude_none=True,
    responses=error_responses(400, 409),
)
async def put_webhook(user_id: UserId, body: WebhookSettings, webhooks: WebhooksDep) -> Webhook:
    """Set the user's webhook (400 when its URL is refused); `secret` only when it is new."""
    return await webhooks.put(user_id, body)


@router.get(
    "",
    response_model=Webhook,
    response_model_exclude_none=True,
    responses=error_responses(404),
)
async def get_webhook(user_id: UserId, webhooks: WebhooksDep) -> Webhook:
    """The user's webhook, without its secret."""
    return await webhooks.get(user_id)


@router.delete("", responses=error_responses(404))
async def delete_webhook(user_id: UserId, webhooks: WebhooksDep) -> dict[str, str]:
    """Remove the user's webhook (its events not delivered yet are then failed)."""
    await webhooks.delete(user_id)
    return {"message": "Webhook removed"}


@router.post("/secret", response_model=Webhook, responses=error_responses(404))
async def rotate_secret(user_id: UserId, webhooks: WebhooksDep) -> Webhook:
    """A new signing secret for the user's webhook (shown in this answer only)."""
    return await webhooks.rotate_secret(user_id)


@router.get("/deliveries", response_model=Deliveries)
async def deliveries(
    user_id: UserId,
    webhooks: WebhooksDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Deliveries:
    """The user's webhook events, newest first, with their attempts."""
    return await webhooks.deliveries(user_id, limit=limit)
