"""Finding and releasing the reservations that were never settled in time, without scanning the
ledger.

Every month document with open reservations carries `holdUntil`, the earliest expiry among them,
set with `$min` by each reservation in the same update that makes it. A sparse index holds only
the documents that have the field, so the sweeper's query (`holdUntil < now`) reads just the
months that may hold an expired reservation. Visiting one, it releases what expired (kept in the
month's `expired` list, so that a late settlement still charges it) and moves `holdUntil` to the
earliest expiry still open, or removes it: a compare-and-set on the `open` list it read, so a
reservation made meanwhile is never left without one. A month is visited about once per hold
after its last reservation, not once per chat.

Measured on SecantusDB (bulks of 8 updates, 5,000 month documents): the sparse index adds about
0.1 ms to each reserve and settle update and answers the sweep's query in 1 ms where a scan took
64 ms; one marker document per reservation (written beside it, deleted at settle) cost 0.42 ms and
two more commands per chat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from usage_service.documents import EXPIRED_KEPT, HOLD_UNTIL, Document, as_utc


@dataclass(frozen=True, slots=True)
class OpenReservation:
    """An open reservation as the month document holds it."""

    key: str
    user_id: str
    period: str
    reservation_id: str
    tokens: int
    expires_at: datetime
    request_id: str
    model: str
    started_at: datetime


class ReservationExpiry:
    def __init__(self, usage: AsyncCollection[Document]) -> None:
        self._usage = usage

    async def ensure_index(self) -> None:
        await self._usage.create_index([(HOLD_UNTIL, ASCENDING)], sparse=True, name="hold_until")

    async def due_months(self, now: datetime, *, limit: int) -> list[str]:
        """The months (keys) whose earliest open reservation has expired by `now`."""
        cursor = self._usage.find({HOLD_UNTIL: {"$lt": now}}, {"_id": 1}, limit=limit)
        return [document["_id"] async for document in cursor]

    async def open_in(self, key: str) -> list[OpenReservation]:
        document = await self._usage.find_one({"_id": key}, {"userId": 1, "period": 1, "open": 1})
        if document is None:
            return []
        return [
            OpenReservation(
                key=key,
                user_id=document["userId"],
                period=document["period"],
                reservation_id=entry["rid"],
                tokens=entry["t"],
                expires_at=as_utc(entry["exp"]),
                request_id=entry.get("req", "unknown"),
                model=entry.get("model", "unknown"),
                started_at=as_utc(entry.get("at", entry["exp"])),
            )
            for entry in document.get("open", [])
        ]

    async def expire(self, reservation: OpenReservation) -> bool:
        """Release one reservation unsettled (its id kept in `expired`); False when it was not
        open any more (settled meanwhile)."""
        result = await self._usage.update_one(
            {
                "_id": reservation.key,
                "open": {
                    "$elemMatch": {"rid": reservation.reservation_id, "t": reservation.tokens}
                },
            },
            {
                "$inc": {
                    "reservedTokens": -reservation.tokens,
                    "remainingTokens": reservation.tokens,
                },
                "$pull": {"open": {"rid": reservation.reservation_id}},
                "$push": {
                    "expired": {
                        "$each": [{"rid": reservation.reservation_id, "t": reservation.tokens}],
                        "$slice": -EXPIRED_KEPT,
                    }
                },
                "$set": {"updatedAt": datetime.now(UTC)},
            },
        )
        return result.modified_count == 1

    async def rehold(self, key: str) -> bool:
        """Move `holdUntil` to the earliest expiry still open (or remove it); False when the
        month changed meanwhile (the next pass tries again)."""
        document = await self._usage.find_one({"_id": key}, {"open": 1})
        if document is None:
            return True
        entries = document.get("open", [])
        if entries:
            earliest = min(entry["exp"] for entry in entries)
            change: Document = {"$set": {HOLD_UNTIL: earliest}}
        else:
            change = {"$unset": {HOLD_UNTIL: ""}}
        result = await self._usage.update_one({"_id": key, "open": entries}, change)
        return result.matched_count == 1
