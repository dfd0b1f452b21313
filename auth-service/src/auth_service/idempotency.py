"""Idempotency records: which user an idempotent request (register or rotate with an
`Idempotency-Key`) was for, kept 24 hours. They hold no key material: the key such a request
issues is derived again from the request (see security.derive_api_key)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

Document = dict[str, Any]
KEEP_SECONDS = 86_400


class IdempotencyRecords:
    def __init__(self, records: AsyncCollection[Document]) -> None:
        self._records = records

    async def ensure_indexes(self) -> None:
        await self._records.create_index(
            [("createdAt", ASCENDING)], expireAfterSeconds=KEEP_SECONDS, name="expiry"
        )

    async def claim(self, fingerprint: str, *, user_id: str) -> str:
        """Record that this request is for `user_id`; the user of an earlier record of the same
        request when there is one (that request's result is the one to give)."""
        try:
            await self._records.insert_one(
                {"_id": fingerprint, "userId": user_id, "createdAt": datetime.now(UTC)}
            )
        except DuplicateKeyError:
            earlier = await self.user_of(fingerprint)
            if earlier is not None:
                return earlier
            return await self.claim(fingerprint, user_id=user_id)  # expired meanwhile
        return user_id

    async def user_of(self, fingerprint: str) -> str | None:
        """The user of a live record of this request (records are kept 24 hours)."""
        record = await self._records.find_one({"_id": fingerprint})
        if record is None or _age_s(record["createdAt"]) > KEEP_SECONDS:
            return None
        return str(record["userId"])


def _age_s(created_at: datetime) -> float:
    moment = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    return (datetime.now(UTC) - moment).total_seconds()
