"""The users collection: the only module that touches auth-service's MongoDB."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from infergate_common.mongo import once_more_if_cut
from infergate_common.validation import Plan
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from auth_service.schemas import User
from auth_service.security import IssuedKey, revoked_placeholder

Document = dict[str, Any]
# Every change of what a key verifies to (rotation, revocation, re-issue, plan) counts up the
# user's `version` and stamps `changedAt`, in the same update as the change: gateways compare the
# version they cached with the latest they were told of, and follow the changes (`changes_since`)
# so that no change depends on the gateway that made it announcing it.
_NEXT_VERSION = {"version": 1}


@dataclass(frozen=True, slots=True)
class UserChangeSeen:
    user_id: str
    version: int
    changed_at: datetime


class EmailTakenError(Exception):
    """The normalised email already belongs to a user."""


class UserRepository:
    def __init__(self, users: AsyncCollection[Document]) -> None:
        self._users = users

    async def ensure_indexes(self) -> None:
        await self._users.create_index([("email", ASCENDING)], unique=True, name="email_unique")
        await self._users.create_index([("keyHash", ASCENDING)], unique=True, name="key_unique")
        await self._users.create_index([("changedAt", ASCENDING)], sparse=True, name="changed_at")

    async def create(
        self, *, email: str, key: IssuedKey, plan: Plan, user_id: str | None = None
    ) -> User:
        """A new user (with `user_id` when an idempotent request chose it)."""
        now = datetime.now(UTC)
        document: Document = {
            "_id": ObjectId(user_id) if user_id else ObjectId(),
            "email": email,
            "keyHash": key.key_hash,
            "keyPrefix": key.display_prefix,
            "plan": plan.value,
            "version": 0,
            "createdAt": now,
            "updatedAt": now,
        }
        try:
            await self._insert_once(document)
        except DuplicateKeyError as exc:
            raise EmailTakenError(email) from exc
        return _to_user(document)

    async def _insert_once(self, document: Document) -> None:
        """Insert, and once more if the connection broke: the first may have applied, and then
        the second fails on its own _id, which is this insert's success (not a taken email).
        Without it a registration could answer 503 although the user exists, and the next try
        409: the key lost."""
        try:
            await once_more_if_cut(lambda: self._users.insert_one(document))
        except DuplicateKeyError:
            if await self._users.find_one({"_id": document["_id"]}, {"_id": 1}) is None:
                raise

    async def holds_key(self, user_id: str, key_hash: str) -> User | None:
        """The user, if `key_hash` is (still) their key."""
        document = await self._users.find_one({"_id": ObjectId(user_id), "keyHash": key_hash})
        return None if document is None else _to_user(document)

    async def find_by_key_hash(self, key_hash: str) -> User | None:
        document = await self._users.find_one({"keyHash": key_hash})
        return None if document is None else _to_user(document)

    async def find_by_id(self, user_id: str) -> User | None:
        document = await self._users.find_one({"_id": ObjectId(user_id)})
        return None if document is None else _to_user(document)

    async def find_by_email(self, email: str) -> User | None:
        document = await self._users.find_one({"email": email})
        return None if document is None else _to_user(document)

    async def rotate_key(self, *, current_hash: str, key: IssuedKey) -> User | None:
        """Swap the key in one conditional update: of two concurrent rotations of one key only
        one matches. None when no user holds `current_hash` (any more)."""
        return await self._update_by_key(
            current_hash,
            {
                "keyHash": key.key_hash,
                "keyPrefix": key.display_prefix,
                "keyIssuedAt": datetime.now(UTC),
            },
        )

    async def revoke_key(self, *, current_hash: str) -> User | None:
        """Leave the user without a working key, in one conditional update."""
        return await self._update_by_key(current_hash, _revoked())

    async def revoke_key_of(self, *, user_id: str) -> User | None:
        """Leave the user without a working key, whatever it was (an operator's revocation).
        None when there is no such user."""
        result = await self._users.update_one({"_id": ObjectId(user_id)}, _change(_revoked()))
        return await self.find_by_id(user_id) if result.matched_count else None

    async def set_plan(self, *, user_id: str, plan: Plan) -> User | None:
        result = await self._users.update_one(
            {"_id": ObjectId(user_id)}, _change({"plan": plan.value})
        )
        return await self.find_by_id(user_id) if result.matched_count else None

    async def replace_key(self, *, user_id: str, key: IssuedKey) -> User | None:
        """Give the user a new key whatever their current one (an operator's re-issue, also
        after a revocation). None when there is no such user."""
        changes = {
            "keyHash": key.key_hash,
            "keyPrefix": key.display_prefix,
            "keyIssuedAt": datetime.now(UTC),
        }
        result = await self._users.update_one({"_id": ObjectId(user_id)}, _change(changes))
        return await self.find_by_id(user_id) if result.matched_count else None

    async def search(self, prefix: str, *, limit: int, after: str | None = None) -> list[User]:
        """Up to `limit` users whose email starts with `prefix` (lower-case, as emails are
        stored), by email, after the email `after` (a page's last)."""
        cursor = self._users.find(
            email_range(prefix, after=after), sort=[("email", ASCENDING)], limit=limit
        )
        return [_to_user(document) async for document in cursor]

    async def changes_since(self, moment: datetime, *, limit: int) -> list[UserChangeSeen]:
        """Key and plan changes stamped at or after `moment`, oldest first."""
        cursor = self._users.find(
            {"changedAt": {"$gte": moment}},
            {"version": 1, "changedAt": 1},
            sort=[("changedAt", ASCENDING)],
            limit=limit,
        )
        return [
            UserChangeSeen(str(d["_id"]), int(d.get("version", 0)), d["changedAt"])
            async for d in cursor
        ]

    async def _update_by_key(self, current_hash: str, changes: Document) -> User | None:
        # update_one, not find_one_and_update (SecantusDB scans the collection for the latter);
        # the user is then read back by the new, unique and indexed keyHash.
        result = await self._users.update_one({"keyHash": current_hash}, _change(changes))
        return await self.find_by_key_hash(changes["keyHash"]) if result.matched_count else None


def _change(changes: Document) -> Document:
    """An update that changes what a key verifies to: new version, stamped."""
    now = datetime.now(UTC)
    return {"$set": {**changes, "updatedAt": now, "changedAt": now}, "$inc": _NEXT_VERSION}


def _revoked() -> Document:
    return {"keyHash": revoked_placeholder(), "keyPrefix": None, "keyRevokedAt": datetime.now(UTC)}


def email_range(prefix: str, *, after: str | None = None) -> Document:
    """The filter of the emails that start with `prefix`, after `after` if given: a range on the
    unique email index, the bounds an anchored regex (`^prefix`) gives MongoDB. SecantusDB routes
    only ranges to an index: a regex (and any substring search) reads every user."""
    bounds: Document = {"$gt": after} if after is not None and after >= prefix else {}
    bounds = bounds or {"$gte": prefix}
    end = _after_prefix(prefix)
    if end is not None:
        bounds["$lt"] = end
    return {"email": bounds}


def _after_prefix(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (strings compare by code
    point, as MongoDB compares UTF-8 bytes); None when there is none (no upper bound)."""
    kept = prefix
    while kept:
        last = ord(kept[-1])
        kept = kept[:-1]
        if last < sys.maxunicode:
            following = 0xE000 if 0xD7FF <= last < 0xE000 else last + 1  # surrogates: not text
            return kept + chr(following)
    return None


def _to_user(document: Document) -> User:
    return User(
        id=str(document["_id"]),
        email=document["email"],
        key_prefix=document.get("keyPrefix"),
        plan=Plan(document["plan"]),
        created_at=document["createdAt"],
        version=document.get("version", 0),
    )
