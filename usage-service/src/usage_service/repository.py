"""usage-service's MongoDB: monthly usage records with open reservations, and the request log.

One document per user and month (`_id` = "<userId>:<YYYY-MM>"), so a new month starts from a new
document: the monthly reset needs no read-then-write. `remainingTokens` is stored so the quota
check is a plain indexed filter (`$gte`), never `$expr`. Open reservations live in the same
document, so reserving and settling are each one atomic update, and settling twice is a no-op.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from usage_service.group_commit import DUPLICATE_KEY, GroupCommit
from usage_service.periods import usage_key
from usage_service.schemas import RequestLogEntry, UsageRecord

Document = dict[str, Any]
_MAX_HINTS = 100_000
# What a batched write's "did not apply" looks like (see `reserve` and `settle`): the upsert's
# insert hit the existing document (duplicate _id), or the update could not apply to the
# document the upsert would have inserted ($pull on a non-array: BadValue).
_BAD_VALUE = 2
_NOT_APPLIED = frozenset({DUPLICATE_KEY, _BAD_VALUE})


@dataclass(frozen=True, slots=True)
class Quota:
    """A month's limit and what is left of it."""

    limit: int
    remaining: int


class QuotaHints:
    """The figures this process last saw in each month's document (bounded, oldest out).

    Only ever used as the expected values of a compare-and-set, so a stale hint (another
    replica, an admin change, a concurrent request) costs a failed update, never a wrong answer.
    """

    def __init__(self, max_entries: int = _MAX_HINTS) -> None:
        self._max = max_entries
        self._hints: OrderedDict[str, Quota] = OrderedDict()

    def get(self, key: str) -> Quota | None:
        return self._hints.get(key)

    def put(self, key: str, quota: Quota) -> Quota:
        self._hints[key] = quota
        self._hints.move_to_end(key)
        if len(self._hints) > self._max:
            self._hints.popitem(last=False)
        return quota

    def shift(self, key: str, returned: int) -> None:
        """A settlement gave `returned` tokens back to the month."""
        hint = self._hints.get(key)
        if hint is not None:
            self._hints[key] = Quota(hint.limit, hint.remaining + returned)

    def forget(self, key: str) -> None:
        self._hints.pop(key, None)


class UsageRepository:
    def __init__(self, usage: AsyncCollection[Document], *, reservation_ttl: timedelta) -> None:
        self._usage = usage
        self._ttl = reservation_ttl
        self._hints = QuotaHints()
        self._writes = GroupCommit(usage)

    async def ensure_indexes(self) -> None:
        # Reserving and settling find the document by `_id`, so this collection needs no other
        # index; each one would be rewritten on every reservation and settlement (on the
        # MongoDB stand-in, dropping these three halved the CPU of both updates). The sweeper,
        # which runs every RESERVATION_SWEEP_SECONDS, scans instead.
        existing = set(await self._usage.index_information())
        for name in ("quota_check", "open_reservation", "open_reservation_expiry"):
            if name in existing:  # created by earlier versions
                await self._usage.drop_index(name)

    async def reserve(
        self, *, user_id: str, period: str, limit: int, reservation_id: str, tokens: int
    ) -> Quota | None:
        """Hold `tokens` of this month's quota, or return None when they are not available."""
        now = datetime.now(UTC)
        entry = {"rid": reservation_id, "t": tokens, "exp": now + self._ttl}
        key = usage_key(user_id, period)
        hint = self._hints.get(key)
        if hint is not None and hint.remaining >= tokens:
            # Compare-and-set on the figures last seen: when they still hold, the result is
            # known without reading the document back (one round trip instead of two).
            # Written with other requests' writes in one bulk (see group_commit), as an upsert
            # so that "the figures changed" is an error of its own: the insert of `_id` fails.
            # (Were the document gone, the upsert would create it from the expected figures.)
            applied = await self._writes.write(
                UpdateOne(
                    {
                        "_id": key,
                        "remainingTokens": hint.remaining,
                        "monthlyTokenLimit": hint.limit,
                    },
                    {
                        **_reservation(tokens, entry, now),
                        "$setOnInsert": {
                            "userId": user_id,
                            "period": period,
                            "usedTokens": 0,
                            "createdAt": now,
                        },
                    },
                    upsert=True,
                ),
                refused=frozenset({DUPLICATE_KEY}),
            )
            if applied:
                return self._hints.put(key, Quota(hint.limit, hint.remaining - tokens))
        # Not seen yet, or changed meanwhile (elsewhere, or by a concurrent request).
        self._hints.forget(key)
        for _ in range(2):
            # update_one then find_one, not find_one_and_update: SecantusDB scans the whole
            # collection for findAndModify (36 ms at 5,000 documents) but not for these.
            result = await self._usage.update_one(
                {"_id": key, "remainingTokens": {"$gte": tokens}},
                _reservation(tokens, entry, now),
            )
            if result.modified_count:
                document = await self._usage.find_one(
                    {"_id": key}, {"remainingTokens": 1, "monthlyTokenLimit": 1}
                )
                if document is not None:
                    # Possibly after later changes too: still this reservation's upper bound.
                    quota = Quota(document["monthlyTokenLimit"], document["remainingTokens"])
                    return self._hints.put(key, quota)
            if tokens > limit:
                return None
            try:
                document = _new_usage(key, user_id=user_id, period=period, limit=limit, now=now)
                document.update(reservedTokens=tokens, remainingTokens=limit - tokens, open=[entry])
                await self._usage.insert_one(document)
                return self._hints.put(key, Quota(limit, limit - tokens))
            except DuplicateKeyError:
                # The month's record exists (maybe created concurrently): the conditional
                # update above decides, once more.
                continue
        return None

    async def settle(
        self, *, user_id: str, period: str, reservation_id: str, reserved: int, charge: int
    ) -> bool:
        """Turn an open reservation into `charge` used tokens; False if it was not open."""
        # The month the reservation was made in (it may be the previous one by now); the amount
        # is the one reserve returned to the (authenticated) caller. Batched with other writes
        # (see group_commit), as an upsert that cannot insert: when no open reservation matches,
        # the upsert's document would have `open` as {"rid": ...}, which $pull refuses
        # (BadValue), so "not open" is an error of its own and nothing is inserted.
        applied = await self._writes.write(
            UpdateOne(
                {
                    "_id": usage_key(user_id, period),
                    "open.rid": reservation_id,
                    "open": {"$elemMatch": {"rid": reservation_id, "t": reserved}},
                },
                {
                    "$inc": {
                        "usedTokens": charge,
                        "reservedTokens": -reserved,
                        "remainingTokens": reserved - charge,
                    },
                    "$pull": {"open": {"rid": reservation_id}},
                    "$set": {"updatedAt": datetime.now(UTC)},
                },
                upsert=True,
            ),
            refused=_NOT_APPLIED,
        )
        if not applied:
            return False
        self._hints.shift(usage_key(user_id, period), reserved - charge)
        return True

    async def drain(self) -> None:
        """Wait for reservations and settlements still being written."""
        await self._writes.drain()

    async def set_limit(self, *, user_id: str, period: str, limit: int) -> UsageRecord:
        """Make `limit` the month's quota, moving `remainingTokens` by the same difference.

        One conditional update on the limit that was read, so concurrent reservations and
        settlements (which `$inc` the counters and never touch the limit) are kept, and of two
        concurrent changes each applies its own difference exactly once.
        """
        key = usage_key(user_id, period)
        self._hints.forget(key)
        while True:
            current = await self._usage.find_one({"_id": key}, {"monthlyTokenLimit": 1})
            if current is None:
                fresh = _new_usage(
                    key, user_id=user_id, period=period, limit=limit, now=datetime.now(UTC)
                )
                try:
                    await self._usage.insert_one(fresh)
                except DuplicateKeyError:
                    continue  # created meanwhile: change that one
                return _to_record(fresh)
            previous = current["monthlyTokenLimit"]
            # update_one, not find_one_and_update: SecantusDB scans the collection for the latter.
            result = await self._usage.update_one(
                {"_id": key, "monthlyTokenLimit": previous},
                {
                    "$set": {"monthlyTokenLimit": limit, "updatedAt": datetime.now(UTC)},
                    "$inc": {"remainingTokens": limit - previous},
                },
            )
            if result.matched_count == 1:
                document = await self._usage.find_one({"_id": key})
                if document is not None:
                    return _to_record(document)

    async def get(self, *, user_id: str, period: str) -> UsageRecord | None:
        document = await self._usage.find_one({"_id": usage_key(user_id, period)})
        return None if document is None else _to_record(document)

    async def expired_reservations(self, *, now: datetime, limit: int = 100) -> list[Document]:
        """Open reservations past their expiry: (userId, period, rid, tokens) documents."""
        cursor = self._usage.find(
            {"open.exp": {"$lt": now}}, {"userId": 1, "period": 1, "open": 1}, limit=limit
        )
        expired: list[Document] = []
        async for document in cursor:
            expired.extend(
                {"userId": document["userId"], "period": document["period"], **entry}
                for entry in document.get("open", [])
                if _as_utc(entry["exp"]) < now
            )
        return expired


class RequestLogRepository:
    """One document per chat attempt, keyed by the attempt so a retried write is a no-op."""

    def __init__(self, logs: AsyncCollection[Document]) -> None:
        self._logs = logs
        self._writes = GroupCommit(logs)

    async def ensure_indexes(self) -> None:
        await self._logs.create_index(
            [("userId", ASCENDING), ("createdAt", DESCENDING)], name="user_recent"
        )
        await self._logs.create_index([("requestId", ASCENDING)], name="request_id")

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

    async def record(self, attempt_id: str, entry: RequestLogEntry) -> bool:
        """Write the entry once; False when this attempt was already logged.

        Concurrent entries are written together (group commit), each caller waiting for its own.
        """
        document = {
            "_id": attempt_id,
            "requestId": entry.request_id,
            "userId": entry.user_id,
            "model": entry.model,
            "promptTokens": entry.prompt_tokens,
            "completionTokens": entry.completion_tokens,
            "tokensUsed": entry.tokens_used,
            "responseTimeMs": entry.response_time_ms,
            "status": entry.status.value,
            "createdAt": entry.created_at,
        }
        return await self._writes.write(InsertOne(document), refused=frozenset({DUPLICATE_KEY}))

    async def drain(self) -> None:
        """Wait for entries still being written."""
        await self._writes.drain()


def _reservation(tokens: int, entry: Document, now: datetime) -> Document:
    return {
        "$inc": {"remainingTokens": -tokens, "reservedTokens": tokens},
        "$push": {"open": entry},
        "$set": {"updatedAt": now},
    }


def _new_usage(key: str, *, user_id: str, period: str, limit: int, now: datetime) -> Document:
    return {
        "_id": key,
        "userId": user_id,
        "period": period,
        "monthlyTokenLimit": limit,
        "usedTokens": 0,
        "reservedTokens": 0,
        "remainingTokens": limit,
        "open": [],
        "createdAt": now,
        "updatedAt": now,
    }


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _to_record(document: Document) -> UsageRecord:
    return UsageRecord(
        user_id=document["userId"],
        period=document["period"],
        used_tokens=document["usedTokens"],
        reserved_tokens=document["reservedTokens"],
        monthly_limit=document["monthlyTokenLimit"],
        remaining_tokens=document["remainingTokens"],
    )
