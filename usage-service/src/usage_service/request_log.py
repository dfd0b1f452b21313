"""The request log: one document per chat attempt, keyed by the attempt (for a chat, its
reservation id), so a repeated write is a no-op."""

from __future__ import annotations

from datetime import datetime

from infergate_common.billing import RequestStatus
from prometheus_client import Histogram
from pymongo import ASCENDING, DESCENDING, InsertOne
from pymongo.asynchronous.collection import AsyncCollection

from usage_service.documents import Document, log_fields
from usage_service.group_commit import DUPLICATE_KEY, GroupCommit
from usage_service.schemas import RequestLogEntry

_REPEATED = frozenset({DUPLICATE_KEY})


class RequestLogRepository:
    """Concurrent entries are written together (group commit), each caller waiting for its own."""

    def __init__(
        self, logs: AsyncCollection[Document], *, batch_sizes: Histogram | None = None
    ) -> None:
        self._logs = logs
        self._writes = GroupCommit(logs, batch_sizes=batch_sizes)

    async def ensure_indexes(self) -> None:
        await self._logs.create_index(
            [("userId", ASCENDING), ("createdAt", DESCENDING)], name="user_recent"
        )
        await self._logs.create_index([("requestId", ASCENDING)], name="request_id")
        # The usage reports (see activity): a month's entries, everyone's or one user's.
        await self._logs.create_index(
            [("period", ASCENDING), ("userId", ASCENDING)], name="period_user"
        )

    async def history(
        self, *, user_id: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[Document]:
        """The user's entries older than `before` (createdAt, _id), newest first."""
        query: Document = {"userId": user_id}
        if before is not None:
            created_at, entry_id = before
            query["$or"] = [
                {"createdAt": {"$lt": created_at}},
                {"createdAt": created_at, "_id": {"$lt": entry_id}},
            ]
        cursor = self._logs.find(
            query, sort=[("createdAt", DESCENDING), ("_id", DESCENDING)], limit=limit
        )
        return await cursor.to_list()

    async def add(self, attempt_id: str, entry: RequestLogEntry) -> bool:
        """Write the entry once; False when this attempt was already logged."""
        document = {"_id": attempt_id, **log_fields(entry)}
        return await self._writes.write(InsertOne(document), refused=_REPEATED)

    async def record_outcome(self, attempt_id: str, entry: RequestLogEntry) -> bool:
        """Log how a reservation was settled: replaces the sweeper's EXPIRED entry if it wrote
        one first, and never an earlier outcome (False then). An insert (an upsert costs half as
        much again on SecantusDB); only when the entry exists, a conditional update."""
        if await self.add(attempt_id, entry):
            return True
        result = await self._logs.update_one(
            {"_id": attempt_id, "status": RequestStatus.EXPIRED.value}, {"$set": log_fields(entry)}
        )
        return result.modified_count == 1

    async def drain(self) -> None:
        """Wait for entries still being written."""
        await self._writes.drain()
