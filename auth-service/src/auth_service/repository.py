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
from auth_service.security import IssuedKey

Document = dict[str, Any]


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


def _to_user(document: Document) -> User:
    return User(
        id=str(document["_id"]),
        email=document["email"],
        key_prefix=document["keyPrefix"],
        plan=Plan(document["plan"]),
        created_at=document["createdAt"],
    )
