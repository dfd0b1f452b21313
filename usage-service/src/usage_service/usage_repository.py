"""The usage ledger: one document per user and month, holding the month's open reservations.

`_id` is "<userId>:<YYYY-MM>", so a new month starts from a new document and the monthly reset
needs no read-then-write. `remainingTokens` (limit - used - reserved) is stored so that the quota
check is a plain filter (`$gte`), never `$expr`. Open reservations live in the same document
(`open`), so reserving and settling are each one atomic update, and a settlement applies at most
once: it pulls its own reservation. Two short lists keep the rare cases exact:

* `expired`: reservations the sweeper released unsettled. A settlement that arrives later (its
  gateway's outbox was waiting for the database) still charges, once, by pulling its id there.
* `void`: ids released before their reservation was made (the gateway gave up waiting for it).
  A reservation whose id is void is never held.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from infergate_common.errors import UpstreamUnavailableError
from infergate_common.mongo import once_more_if_cut
from prometheus_client import Histogram
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from usage_service.documents import (
    HOLD_UNTIL,
    VOID_KEPT,
    Document,
    Hold,
    new_usage,
    to_record,
)
from usage_service.group_commit import DUPLICATE_KEY, GroupCommit
from usage_service.quota_hints import Quota, QuotaHints
from usage_service.schemas import UsageRecord

# A batched write's "did not apply" (see `settle`): the upsert's insert hit the existing document
# (duplicate _id), or the update could not apply to the document it would insert (BadValue).
_BAD_VALUE = 2
_NOT_APPLIED = frozenset({DUPLICATE_KEY, _BAD_VALUE})
_RESERVE_ATTEMPTS = 10
_FIGURES = {"remainingTokens": 1, "monthlyTokenLimit": 1, "open": 1, "void": 1}


@dataclass(frozen=True, slots=True)
class Granted:
    tokens: int
    quota: Quota  # the month after this reservation


@dataclass(frozen=True, slots=True)
class Refused:
    remaining: int
    barred: bool = False  # the id is void: its gateway released it before it was made


class UsageRepository:
    def __init__(
        self, usage: AsyncCollection[Document], *, batch_sizes: Histogram | None = None
    ) -> None:
        self._usage = usage
        self._hints = QuotaHints()
        self._writes = GroupCommit(usage, batch_sizes=batch_sizes)

    async def ensure_indexes(self) -> None:
        # Reserving and settling find the document by `_id`; SecantusDB rewrites every index
        # entry on each update (dropping three indexes halved the CPU of both updates), so the
        # only other index is the sweeper's small sparse one (see expiry).
        existing = set(await self._usage.index_information())
        for name in ("quota_check", "open_reservation", "open_reservation_expiry"):
            if name in existing:  # created by earlier versions
                await self._usage.drop_index(name)

    def hint(self, key: str) -> Quota | None:
        """The month's figures this process last saw (for quota alerts: `limit - remaining` is
        an upper bound of the tokens used)."""
        return self._hints.get(key)

    async def reserve(self, hold: Hold, *, limit: int) -> Granted | Refused:
        """Hold the worst case, or what is left when at least the minimum is; else refuse."""
        hint = self._hints.get(hold.key)
        if hint is not None and hint.remaining >= hold.min_tokens:
            granted = await self._reserve_by_hint(hold, hint)
            if granted is not None:
                return granted
        self._hints.forget(hold.key)
        return await self._reserve_by_condition(hold, limit=limit)

    async def _reserve_by_hint(self, hold: Hold, hint: Quota) -> Granted | None:
        """A compare-and-set on the figures last seen: when they still hold, the result is known
        without reading the document back. Written with other requests' writes in one bulk (see
        group_commit), as an upsert so that "the figures changed" is an error of its own: the
        insert of `_id` fails. (Were the document gone, the upsert would create it from them.)"""
        tokens = min(hold.tokens, hint.remaining)
        now = datetime.now(UTC)
        applied = await self._writes.write(
            UpdateOne(
                {
                    "_id": hold.key,
                    "remainingTokens": hint.remaining,
                    "monthlyTokenLimit": hint.limit,
                    "open.rid": {"$ne": hold.reservation_id},
                    "void": {"$ne": hold.reservation_id},
                },
                {
                    **_reservation(hold, tokens, now),
                    "$setOnInsert": {
                        "userId": hold.user_id,
                        "period": hold.period,
                        "usedTokens": 0,
                        "createdAt": now,
                    },
                },
                upsert=True,
            ),
            refused=frozenset({DUPLICATE_KEY}),
        )
        if not applied:
            return None
        return Granted(
            tokens, self._hints.put(hold.key, Quota(hint.limit, hint.remaining - tokens))
        )

    async def _reserve_by_condition(self, hold: Hold, *, limit: int) -> Granted | Refused:
        """Not seen yet, or changed meanwhile: a conditional update, then a read; repeated while
        concurrent changes get in between. update_one and find_one, not find_one_and_update:
        SecantusDB scans the whole collection for findAndModify."""
        for _ in range(_RESERVE_ATTEMPTS):
            if await self._apply(hold, hold.tokens, {"$gte": hold.tokens}):
                document = await self._usage.find_one({"_id": hold.key}, _FIGURES)
                if document is not None:  # possibly after later changes: still an upper bound
                    quota = Quota(document["monthlyTokenLimit"], document["remainingTokens"])
                    return Granted(hold.tokens, self._hints.put(hold.key, quota))
            document = await self._usage.find_one({"_id": hold.key}, _FIGURES)
            if document is None:
                granted = await self._open_month(hold, limit=limit)
                if granted is not None:
                    return granted
                continue
            outcome = _seen(document, hold)
            if outcome is not None:
                return outcome
            # Less than the worst case is left, but at least the minimum: hold all that is left
            # (the gateway caps the model's output to fit), if nothing changed since the read.
            remaining = document["remainingTokens"]
            tokens = min(hold.tokens, remaining)
            if await self._apply(hold, tokens, remaining):
                quota = Quota(document["monthlyTokenLimit"], remaining - tokens)
                return Granted(tokens, self._hints.put(hold.key, quota))
        raise UpstreamUnavailableError("The quota kept changing; try again", code="quota_busy")

    async def _apply(self, hold: Hold, tokens: int, remaining: object) -> bool:
        # Safe to repeat: a reservation already held does not match its own filter again.
        result = await once_more_if_cut(
            lambda: self._usage.update_one(
                {
                    "_id": hold.key,
                    "remainingTokens": remaining,
                    "open.rid": {"$ne": hold.reservation_id},
                    "void": {"$ne": hold.reservation_id},
                },
                _reservation(hold, tokens, datetime.now(UTC)),
            )
        )
        return result.modified_count == 1

    async def _open_month(self, hold: Hold, *, limit: int) -> Granted | Refused | None:
        """The month's first reservation creates its document (None: it was created meanwhile)."""
        if limit < hold.min_tokens:
            return Refused(limit)
        tokens = min(hold.tokens, limit)
        document = new_usage(
            hold.key, user_id=hold.user_id, period=hold.period, limit=limit, now=datetime.now(UTC)
        )
        document.update(reservedTokens=tokens, remainingTokens=limit - tokens)
        document.update(open=[hold.entry(tokens)], **{HOLD_UNTIL: hold.expires_at})
        try:
            await once_more_if_cut(lambda: self._usage.insert_one(document))
        except DuplicateKeyError:
            return None  # created meanwhile (or by the first try: the next round finds it held)
        return Granted(tokens, self._hints.put(hold.key, Quota(limit, limit - tokens)))

    async def settle(self, *, key: str, reservation_id: str, reserved: int, charge: int) -> bool:
        """Turn an open reservation into `charge` used tokens; False if it was not open.

        Batched (see group_commit) as an upsert that cannot insert: when no open reservation
        matches, the document it would insert has `open` as {"rid": ...}, which $pull refuses
        (BadValue), so "not open" is an error of its own and nothing is inserted.

        The figures last seen move as the settlement is queued, not once it is written: a
        reservation queued after it (the user's next chat, often) is written after it too, so its
        compare-and-set expects what the settlement leaves. Were it not applied, they are
        forgotten (the next reservation reads the document)."""
        self._hints.shift(key, reserved - charge)
        applied = False
        try:
            applied = await self._writes.write(
                UpdateOne(
                    {
                        "_id": key,
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
        finally:
            if not applied:
                self._hints.forget(key)
        return applied

    async def settle_late(
        self, *, key: str, reservation_id: str, reserved: int, charge: int
    ) -> bool:
        """Charge a reservation the sweeper had released; False if it is not among those."""
        result = await self._usage.update_one(
            {"_id": key, "expired": {"$elemMatch": {"rid": reservation_id, "t": reserved}}},
            {
                "$inc": {"usedTokens": charge, "remainingTokens": -charge},
                "$pull": {"expired": {"rid": reservation_id}},
                "$set": {"updatedAt": datetime.now(UTC)},
            },
        )
        self._hints.forget(key)
        return result.modified_count == 1

    async def void(self, *, key: str, reservation_id: str, month: Document) -> bool:
        """Bar `reservation_id` from being held; False when it is open (release it instead).
        `month` is the document to create when the month has none yet."""
        try:
            await self._usage.update_one(
                {"_id": key, "open.rid": {"$ne": reservation_id}},
                {
                    "$push": {"void": {"$each": [reservation_id], "$slice": -VOID_KEPT}},
                    "$setOnInsert": {k: v for k, v in month.items() if k != "_id"},
                },
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return True

    async def drain(self) -> None:
        """Wait for reservations and settlements still being written."""
        await self._writes.drain()

    async def set_limit(self, *, user_id: str, period: str, key: str, limit: int) -> UsageRecord:
        """Make `limit` the month's quota, moving `remainingTokens` by the same difference.

        One conditional update on the limit that was read, so concurrent reservations and
        settlements (which `$inc` the counters and never touch the limit) are kept, and of two
        concurrent changes each applies its own difference exactly once.
        """
        self._hints.forget(key)
        while True:
            current = await self._usage.find_one({"_id": key}, {"monthlyTokenLimit": 1})
            if current is None:
                fresh = new_usage(
                    key, user_id=user_id, period=period, limit=limit, now=datetime.now(UTC)
                )
                try:
                    await self._usage.insert_one(fresh)
                except DuplicateKeyError:
                    continue  # created meanwhile: change that one
                return to_record(fresh)
            previous = current["monthlyTokenLimit"]
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
                    return to_record(document)

    async def get(self, key: str) -> UsageRecord | None:
        document = await self._usage.find_one({"_id": key})
        return None if document is None else to_record(document)


def _seen(document: Document, hold: Hold) -> Granted | Refused | None:
    """What a read of the month decides on its own: the reservation is already held (a repeated
    request), its id is void, or not even the minimum is left; None otherwise."""
    quota = Quota(document["monthlyTokenLimit"], document["remainingTokens"])
    for entry in document.get("open", []):
        if entry["rid"] == hold.reservation_id:
            return Granted(entry["t"], quota)
    if hold.reservation_id in document.get("void", []):
        return Refused(quota.remaining, barred=True)
    if quota.remaining < hold.min_tokens:
        return Refused(quota.remaining)
    return None


def _reservation(hold: Hold, tokens: int, now: datetime) -> Document:
    return {
        "$inc": {"remainingTokens": -tokens, "reservedTokens": tokens},
        "$push": {"open": hold.entry(tokens)},
        "$set": {"updatedAt": now},
        # The sweeper's index: the earliest expiry among the open reservations (see expiry).
        "$min": {HOLD_UNTIL: hold.expires_at},
    }
