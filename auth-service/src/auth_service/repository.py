"""The users collection: the only module that touches auth-service's MongoDB."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from infergate_common.validation import Plan
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from auth_service.schemas import User
from auth_service.security import IssuedKey, revoked_placeholder

Document = dict[str, Any]
# Every change of what a key verifies to (rotation, revocation, plan) counts up the user's
# `version`; gateways compare the version they cached with the latest one they were told of.
_NEXT_VERSION = {"version": 1}


class EmailTakenError(Exception):
    """The normalised email already belongs to a user."""


class UserRepository:
    def __init__(self, users: AsyncCollection[Document]) -> None:
        self._users = users

    async def ensure_indexes(self) -> None:
        await self._users.create_index([("email", ASCENDING)], unique=True, name="email_unique")
        await self._users.create_index([("keyHash", ASCENDING)], unique=True, name="key_unique")

    async def create(self, *, email: str, key: IssuedKey, plan: Plan) -> User:
        now = datetime.now(UTC)
        document: Document = {
            "_id": ObjectId(),
            "email": email,
            "keyHash": key.key_hash,
            "keyPrefix": key.display_prefix,
            "plan": plan.value,
            "version": 0,
            "createdAt": now,
            "updatedAt": now,
        }
        try:
            await self._users.insert_one(document)
        except DuplicateKeyError as exc:
            raise EmailTakenError(email) from exc
        return _to_user(document)

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
        return await self._update_by_key(
            current_hash,
            {
                "keyHash": revoked_placeholder(),
                "keyPrefix": None,
                "keyRevokedAt": datetime.now(UTC),
            },
        )

    async def set_plan(self, *, user_id: str, plan: Plan) -> User | None:
        result = await self._users.update_one(
            {"_id": ObjectId(user_id)},
            {"$set": {"plan": plan.value, "updatedAt": datetime.now(UTC)}, "$inc": _NEXT_VERSION},
        )
        return await self.find_by_id(user_id) if result.matched_count else None

    async def _update_by_key(self, current_hash: str, changes: Document) -> User | None:
        # update_one, not find_one_and_update (SecantusDB scans the collection for the latter);
        # the user is then read back by the new, unique and indexed keyHash.
        result = await self._users.update_one(
            {"keyHash": current_hash},
            {"$set": {**changes, "updatedAt": datetime.now(UTC)}, "$inc": _NEXT_VERSION},
        )
        return await self.find_by_key_hash(changes["keyHash"]) if result.matched_count else None


def _to_user(document: Document) -> User:
    return User(
        id=str(document["_id"]),
        email=document["email"],
        key_prefix=document.get("keyPrefix"),
        plan=Plan(document["plan"]),
        created_at=document["createdAt"],
        version=document.get("version", 0),
    )
