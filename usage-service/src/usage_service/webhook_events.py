"""The durable queue of webhook events (collection `webhook_events`), also the delivery log.

One document per event. Its `_id` is derived from (target, user, month, threshold), so the same
crossing found twice (by two replicas, by the sweep after a settlement already found it, after a
restart) cannot queue a second event: the insert is refused as a duplicate key.

Delivery is a job queue safe for several replicas: a worker claims a due event with a conditional
update that sets a lease (`lease`, a fresh token, and `nextAttemptAt` moved to the lease's end),
so a second worker's claim of the same event finds the lease changed and does nothing. The
outcome is written only under that lease. A worker that dies mid-attempt leaves the event due
again when its lease ends: delivery is at least once, and the event id lets receivers deduplicate.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from infergate_common.webhooks import EVENT_TYPE, Attempt, Delivery, DeliveryStatus
from pymongo import ASCENDING, DESCENDING, InsertOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from usage_service.documents import Document, as_utc
from usage_service.group_commit import DUPLICATE_KEY

HISTORY_KEPT = 20  # attempts kept per event for the delivery log


class Target(StrEnum):
    USER = "user"  # the user's own webhook
    GLOBAL = "global"  # the operator's QUOTA_WEBHOOK_URL


def event_id(target: Target, user_id: str, period: str, threshold: int) -> str:
    digest = hashlib.sha256(f"{target.value}:{user_id}:{period}:{threshold}".encode())
    return "evt_" + digest.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Crossing:
    """A user's month at or past one threshold of one target."""

    target: Target
    user_id: str
    period: str
    threshold: int
    used_tokens: int
    monthly_limit: int

    @property
    def event_id(self) -> str:
        return event_id(self.target, self.user_id, self.period, self.threshold)


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """An event a worker holds the lease of, for one attempt."""

    id: str
    target: Target
    user_id: str
    created_at: datetime
    attempts: int  # this one included
    lease: str
    document: Document

    def body(self) -> bytes:
        """The JSON sent, the same bytes on every attempt."""
        d = self.document
        return json.dumps(
            {
                "id": self.id,
                "type": d["type"],
                "timestamp": _iso(self.created_at),
                "data": {
                    "userId": self.user_id,
                    "period": d["period"],
                    "threshold": d["threshold"],
                    "usedTokens": d["usedTokens"],
                    "monthlyLimit": d["monthlyLimit"],
                },
            },
            separators=(",", ":"),
        ).encode()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_event(crossing: Crossing, now: datetime) -> Document:
    return {
        "_id": crossing.event_id,
        "type": EVENT_TYPE,
        "target": crossing.target.value,
        "userId": crossing.user_id,
        "period": crossing.period,
        "threshold": crossing.threshold,
        "usedTokens": crossing.used_tokens,
        "monthlyLimit": crossing.monthly_limit,
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "nextAttemptAt": now,
        "lease": None,
        "history": [],
        "createdAt": now,
        "updatedAt": now,
    }


class WebhookEvents:
    def __init__(self, events: AsyncCollection[Document]) -> None:
        self._events = events

    async def ensure_indexes(self) -> None:
        await self._events.create_index(
            [("status", ASCENDING), ("nextAttemptAt", ASCENDING)], name="due"
        )
        await self._events.create_index(
            [("userId", ASCENDING), ("target", ASCENDING), ("createdAt", DESCENDING)],
            name="user_log",
        )

    async def enqueue(self, crossings: Sequence[Crossing], *, now: datetime) -> list[str]:
        """Queue an event for each crossing not queued before; the ids newly queued."""
        if not crossings:
            return []
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # BSON dates hold ms
        operations = [InsertOne(_new_event(crossing, now)) for crossing in crossings]
        repeated: set[int] = set()
        try:
            await self._events.bulk_write(operations, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(error.get("code") != DUPLICATE_KEY for error in errors):
                raise
            repeated = {int(error["index"]) for error in errors}
        return [c.event_id for i, c in enumerate(crossings) if i not in repeated]

    async def known(self, ids: Collection[str]) -> set[str]:
        """Those of `ids` queued already."""
        cursor = self._events.find({"_id": {"$in": list(ids)}}, {"_id": 1})
        return {document["_id"] async for document in cursor}

    async def claim_due(self, now: datetime, *, limit: int, lease_s: float) -> list[ClaimedEvent]:
        """Take the lease of up to `limit` events due by `now` (those another worker took
        first are left to it)."""
        due = await self._events.find(
            {"status": DeliveryStatus.PENDING.value, "nextAttemptAt": {"$lte": now}},
            sort=[("nextAttemptAt", ASCENDING)],
            limit=limit,
        ).to_list()
        claimed = []
        for document in due:
            lease = uuid.uuid4().hex
            result = await self._events.update_one(
                {
                    "_id": document["_id"],
                    "status": DeliveryStatus.PENDING.value,
                    "lease": document.get("lease"),
                    "nextAttemptAt": {"$lte": now},
                },
                {
                    "$set": {
                        "lease": lease,
                        "nextAttemptAt": now + timedelta(seconds=lease_s),
                        "updatedAt": now,
                    },
                    "$inc": {"attempts": 1},
                },
            )
            if result.modified_count == 1:
                claimed.append(_claimed(document, lease))
        return claimed

    async def finish_attempt(
        self,
        event: ClaimedEvent,
        attempt: Attempt,
        *,
        status: DeliveryStatus,
        next_attempt_at: datetime | None,
    ) -> bool:
        """Record the attempt and the event's new state; False when the lease was lost (it
        ran out and another worker took the event)."""
        change: Document = {
            "status": status.value,
            "nextAttemptAt": next_attempt_at,
            "lease": None,
            "lastStatusCode": attempt.status_code,
            "lastError": attempt.error,
            "updatedAt": attempt.at,
        }
        if status is DeliveryStatus.DELIVERED:
            change["deliveredAt"] = attempt.at
        entry = attempt.model_dump(by_alias=True)
        result = await self._events.update_one(
            {"_id": event.id, "lease": event.lease},
            {"$set": change, "$push": {"history": {"$each": [entry], "$slice": -HISTORY_KEPT}}},
        )
        return result.modified_count == 1

    async def deliveries_of(self, user_id: str, *, limit: int) -> list[Delivery]:
        """The user's own webhook's events, newest first (never the operator's)."""
        cursor = self._events.find(
            {"userId": user_id, "target": Target.USER.value},
            sort=[("createdAt", DESCENDING), ("_id", DESCENDING)],
            limit=limit,
        )
        return [_delivery(document) async for document in cursor]

    async def pending_count(self) -> int:
        return await self._events.count_documents({"status": DeliveryStatus.PENDING.value})


def _claimed(document: Document, lease: str) -> ClaimedEvent:
    return ClaimedEvent(
        id=document["_id"],
        target=Target(document["target"]),
        user_id=document["userId"],
        created_at=as_utc(document["createdAt"]),
        attempts=document["attempts"] + 1,
        lease=lease,
        document=document,
    )


def _delivery(document: Document) -> Delivery:
    status = DeliveryStatus(document["status"])
    next_at = document.get("nextAttemptAt")
    delivered_at = document.get("deliveredAt")
    return Delivery(
        event_id=document["_id"],
        type=document["type"],
        period=document["period"],
        threshold=document["threshold"],
        status=status,
        attempts=document["attempts"],
        last_status_code=document.get("lastStatusCode"),
        last_error=document.get("lastError"),
        next_attempt_at=as_utc(next_at) if next_at and status is DeliveryStatus.PENDING else None,
        history=[Attempt.model_validate(entry) for entry in document.get("history", [])],
        created_at=as_utc(document["createdAt"]),
        updated_at=as_utc(document["updatedAt"]),
        delivered_at=as_utc(delivered_at) if delivered_at else None,
    )
