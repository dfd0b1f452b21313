"""Quota alerts by webhook: what the routes call, and `open_webhooks`, which builds the pieces and
runs their background tasks for the life of the process.

The pieces: users' webhooks (webhook_configs), the durable event queue and delivery log
(webhook_events), detection after settlements (quota_alerts) with its recovery sweep
(quota_alert_sweep), delivery (webhook_delivery, webhook_sender), the SSRF rules (webhook_urls)
and the signing (webhook_signing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from infergate_common.errors import NotFoundError
from infergate_common.tasks import cancel_and_wait
from infergate_common.webhooks import Deliveries, Webhook, WebhookSettings
from prometheus_client import CollectorRegistry
from pymongo.asynchronous.database import AsyncDatabase

from usage_service.alert_targets import AlertTargets
from usage_service.config import Settings
from usage_service.documents import Document
from usage_service.quota_alert_sweep import AlertSweep
from usage_service.quota_alerts import HintSource, QuotaAlerts
from usage_service.webhook_configs import WebhookConfig, WebhookConfigs
from usage_service.webhook_delivery import GlobalWebhook, open_delivery
from usage_service.webhook_events import WebhookEvents
from usage_service.webhook_metrics import WebhookMetrics
from usage_service.webhook_urls import AddressPolicy, check_url

_log = structlog.get_logger("webhooks")
_NO_WEBHOOK = "No webhook is set"


@dataclass(frozen=True, slots=True)
class Webhooks:
    configs: WebhookConfigs
    events: WebhookEvents
    targets: AlertTargets
    alerts: QuotaAlerts  # told of each settlement's charge (Metering's observer)
    policy: AddressPolicy

    async def put(self, user_id: str, body: WebhookSettings) -> Webhook:
        """Set the user's webhook (400 when its URL is refused); the secret when it is new."""
        destination = await check_url(body.url, self.policy)
        config, created = await self.configs.put(
            user_id, url=body.url, thresholds=body.thresholds, now=datetime.now(UTC)
        )
        self.targets.changed(user_id, config.thresholds)
        _log.info("webhook_set", user_id=user_id, destination=destination.origin, created=created)
        return _webhook(config, with_secret=created)

    async def get(self, user_id: str) -> Webhook:
        config = await self.configs.get(user_id)
        if config is None:
            raise NotFoundError(_NO_WEBHOOK, code="webhook_not_found")
        return _webhook(config, with_secret=False)

    async def rotate_secret(self, user_id: str) -> Webhook:
        config = await self.configs.rotate(user_id, now=datetime.now(UTC))
        if config is None:
            raise NotFoundError(_NO_WEBHOOK, code="webhook_not_found")
        _log.info("webhook_secret_rotated", user_id=user_id)
        return _webhook(config, with_secret=True)

    async def delete(self, user_id: str) -> None:
        if not await self.configs.delete(user_id):
            raise NotFoundError(_NO_WEBHOOK, code="webhook_not_found")
        self.targets.changed(user_id, None)
        _log.info("webhook_deleted", user_id=user_id)

    async def deliveries(self, user_id: str, *, limit: int) -> Deliveries:
        return Deliveries(data=await self.events.deliveries_of(user_id, limit=limit))


def _webhook(config: WebhookConfig, *, with_secret: bool) -> Webhook:
    return Webhook(
        url=config.url,
        thresholds=list(config.thresholds),
        secret=config.secret if with_secret else None,
        created_at=config.created_at,
        updated_at=config.updated_at,
    )


async def open_webhooks(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    db: AsyncDatabase[Document],
    hints: HintSource,
    registry: CollectorRegistry,
) -> Webhooks:
    """The webhooks, with detection, the sweep and delivery running until the stack closes."""
    metrics = WebhookMetrics.create(registry)
    configs, events = WebhookConfigs(db["webhooks"]), WebhookEvents(db["webhook_events"])
    await events.ensure_indexes()
    global_webhook = GlobalWebhook.of(settings)
    targets = AlertTargets(
        configs, global_thresholds=settings.webhook_thresholds if global_webhook else None
    )
    worker = open_delivery(
        settings,
        stack,
        events=events,
        configs=configs,
        global_webhook=global_webhook,
        metrics=metrics,
    )
    alerts = QuotaAlerts(
        usage=db["usage"],
        hints=hints,
        targets=targets,
        events=events,
        metrics=metrics,
        on_queued=worker.wake,
    )
    sweep = AlertSweep(
        usage=db["usage"],
        state=db["webhook_state"],
        configs=configs,
        targets=targets,
        alerts=alerts,
        interval_s=settings.quota_webhook_sweep_seconds,
    )
    # Stopped in reverse: the sweep, then detection's last pass, then delivery.
    _start(stack, worker.run(), worker.stop, grace_s=settings.quota_webhook_timeout_seconds + 2)
    _start(stack, alerts.run(), alerts.stop, grace_s=settings.mongo_timeout_ms / 1000 + 2)
    _start(stack, sweep.run(), sweep.stop, grace_s=settings.mongo_timeout_ms / 1000 + 2)
    return Webhooks(
        configs=configs,
        events=events,
        targets=targets,
        alerts=alerts,
        policy=settings.webhook_policy,
    )


def _start(
    stack: AsyncExitStack,
    work: Coroutine[Any, Any, None],
    stop: Callable[[], None],
    *,
    grace_s: float,
) -> None:
    """Run `work` as a task until the stack closes: then `stop`, and after `grace_s` cancel."""
    task = asyncio.create_task(work)

    async def finish() -> None:
        stop()
        await asyncio.wait({task}, timeout=grace_s)
        await cancel_and_wait(task)  # at once when it has ended (its failure, if any, logged)

    stack.push_async_callback(finish)
