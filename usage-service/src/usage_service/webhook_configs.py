"""Users' webhooks: one document per user (`_id` the user id) with the URL, the thresholds and
the signing secret. The secret is kept as it is (it signs, so it cannot be hashed) and leaves
this service only in the answer that made it."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from infergate_common.errors import ConflictError
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from usage_service.documents import Document, as_utc
from usage_service.webhook_signing import new_secret


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    user_id: str
    url: str
    thresholds: tuple[int, ...]
    secret: str
    created_at: datetime
    updated_at: datetime


def _config(document: Document) -> WebhookConfig:
    return WebhookConfig(
        user_id=document["_id"],
        url=document["url"],
        thresholds=tuple(document["thresholds"]),
        secret=document["secret"],
        created_at=as_utc(document["createdAt"]),
        updated_at=as_utc(document["updatedAt"]),
    )


class WebhookConfigs:
    def __init__(self, configs: AsyncCollection[Document]) -> None:
        self._configs = configs

    async def put(
        self, user_id: str, *, url: str, thresholds: list[int], now: datetime
    ) -> tuple[WebhookConfig, bool]:
        """Set the user's URL and thresholds; (the webhook, whether it was created: then with a
        new secret)."""
        change = {"url": url, "thresholds": thresholds, "updatedAt": now}
        insert = {"secret": new_secret(), "createdAt": now}

        async def upsert() -> bool:
            result = await self._configs.update_one(
                {"_id": user_id}, {"$set": change, "$setOnInsert": insert}, upsert=True
            )
            return result.upserted_id is not None

        try:
            created = await upsert()
        except DuplicateKeyError:  # raced another request's insert: it exists now
            created = await upsert()
        document = await self._configs.find_one({"_id": user_id})
        if document is None:
            raise ConflictError("The webhook was removed meanwhile", code="webhook_removed")
        return _config(document), created

    async def get(self, user_id: str) -> WebhookConfig | None:
        document = await self._configs.find_one({"_id": user_id})
        return None if document is None else _config(document)

    async def thresholds_of(self, user_ids: Collection[str]) -> dict[str, tuple[int, ...]]:
        """The thresholds of those of `user_ids` who have a webhook."""
        cursor = self._configs.find({"_id": {"$in": list(user_ids)}}, {"thresholds": 1})
        return {document["_id"]: tuple(document["thresholds"]) async for document in cursor}

    async def users_with_webhooks(self, *, limit: int) -> list[str]:
        """The ids of (at most `limit` of) the users with a webhook."""
        cursor = self._configs.find({}, {"_id": 1}, limit=limit)
        return [document["_id"] async for document in cursor]

    async def users_after(self, user_id: str | None, *, limit: int) -> list[str]:
        """A page of the users with a webhook, by id, after `user_id`."""
        query: Document = {} if user_id is None else {"_id": {"$gt": user_id}}
        cursor = self._configs.find(query, {"_id": 1}, sort=[("_id", ASCENDING)], limit=limit)
        return [document["_id"] async for document in cursor]

    async def rotate(self, user_id: str, *, now: datetime) -> WebhookConfig | None:
        """A new secret for the user's webhook (None: there is none)."""
        result = await self._configs.update_one(
            {"_id": user_id}, {"$set": {"secret": new_secret(), "updatedAt": now}}
        )
        return None if result.matched_count == 0 else await self.get(user_id)

    async def delete(self, user_id: str) -> bool:
        return (await self._configs.delete_one({"_id": user_id})).deleted_count == 1
