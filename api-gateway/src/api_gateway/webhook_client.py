"""usage-service's webhook calls, made on the gateway's usage-service client: its connection
pool, its replica of the user, and its translation of failures (a refused URL stays a 400 with
usage-service's message)."""

from __future__ import annotations

from infergate_common.webhooks import Deliveries, Webhook, WebhookSettings

from api_gateway.clients import UsageClient


class WebhookClient:
    def __init__(self, usage: UsageClient) -> None:
        self._usage = usage

    async def put(self, user_id: str, settings: WebhookSettings) -> Webhook:
        body = await self._usage.call("PUT", _path(user_id), json=settings.wire(), affinity=user_id)
        return Webhook.model_validate(body)

    async def get(self, user_id: str) -> Webhook:
        return Webhook.model_validate(
            await self._usage.call("GET", _path(user_id), affinity=user_id)
        )

    async def delete(self, user_id: str) -> None:
        await self._usage.call("DELETE", _path(user_id), affinity=user_id)

    async def rotate_secret(self, user_id: str) -> Webhook:
        body = await self._usage.call("POST", f"{_path(user_id)}/secret", affinity=user_id)
        return Webhook.model_validate(body)

    async def deliveries(self, user_id: str, *, limit: int) -> Deliveries:
        body = await self._usage.call(
            "GET", f"{_path(user_id)}/deliveries", params={"limit": str(limit)}, affinity=user_id
        )
        return Deliveries.model_validate(body)


def _path(user_id: str) -> str:
    return f"/usage/{user_id}/webhook"
