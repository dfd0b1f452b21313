"""Group commit against a real MongoDB-protocol server: batched, never lost, outcomes per write."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from infergate_devstack.components.datastores import mongo_uri
from pymongo import AsyncMongoClient, InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, PyMongoError
from usage_service.group_commit import DUPLICATE_KEY, GroupCommit, Operation

Document = dict[str, Any]
DUPLICATE = frozenset({DUPLICATE_KEY})


class CountingCollection:
    """The real collection, with the batch sizes of `bulk_write` recorded (not replaced)."""

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection
        self.batches: list[int] = []

    async def bulk_write(self, requests: Sequence[Operation], *, ordered: bool) -> object:
        self.batches.append(len(requests))
        return await self.collection.bulk_write(list(requests), ordered=ordered)


class Inserter:
    """Inserts through a group commit, as the request log does."""

    def __init__(self, group: GroupCommit) -> None:
        self.group = group

    async def insert(self, document: Document) -> bool:
        return await self.group.write(InsertOne(document), refused=DUPLICATE)

    async def drain(self) -> None:
        await self.group.drain()


@pytest.fixture
async def collection(mongo_port: int) -> AsyncIterator[AsyncCollection[Document]]:
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(
        mongo_uri(mongo_port, f"group-{uuid.uuid4().hex[:8]}")
    )
    yield mongo.get_default_database()["requestlogs"]
    await mongo.close()


def inserter_over(target: CountingCollection, *, max_batch: int = 256) -> Inserter:
    return Inserter(GroupCommit(target, max_batch=max_batch))


async def test_concurrent_inserts_are_written_in_few_batches_and_all_stored(
    collection: AsyncCollection[Document],
) -> None:
    target = CountingCollection(collection)
    inserter = inserter_over(target)
    results = await asyncio.gather(*(inserter.insert({"_id": f"a{i}", "n": i}) for i in range(100)))
    assert results == [True] * 100
    assert await collection.count_documents({}) == 100
    assert sum(target.batches) == 100
    # The first caller starts a write at once; the other 99 are queued behind it together.
    assert len(target.batches) <= 3, target.batches


async def test_a_lone_insert_is_written_at_once(collection: AsyncCollection[Document]) -> None:
    target = CountingCollection(collection)
    inserter = inserter_over(target)
    assert await inserter.insert({"_id": "only"}) is True
    assert target.batches == [1]
    assert await collection.find_one({"_id": "only"}) == {"_id": "only"}


async def test_a_repeated_id_is_reported_per_caller_and_the_rest_of_the_batch_is_kept(
    collection: AsyncCollection[Document],
) -> None:
    inserter = inserter_over(CountingCollection(collection))
    assert await inserter.insert({"_id": "dup", "first": True}) is True
    results = await asyncio.gather(
        inserter.insert({"_id": "x1"}),
        inserter.insert({"_id": "dup", "first": False}),
        inserter.insert({"_id": "x2"}),
        inserter.insert({"_id": "x2"}),
    )
    assert list(results) == [True, False, True, False]
    assert await collection.find_one({"_id": "dup"}) == {"_id": "dup", "first": True}
    assert await collection.count_documents({}) == 3


async def test_batches_are_capped(collection: AsyncCollection[Document]) -> None:
    target = CountingCollection(collection)
    inserter = inserter_over(target, max_batch=8)
    await asyncio.gather(*(inserter.insert({"_id": i}) for i in range(40)))
    assert max(target.batches) <= 8
    assert await collection.count_documents({}) == 40


async def test_a_caller_that_goes_away_does_not_lose_its_entry(
    collection: AsyncCollection[Document],
) -> None:
    inserter = inserter_over(CountingCollection(collection))
    blockers = [asyncio.create_task(inserter.insert({"_id": f"b{i}"})) for i in range(5)]
    leaving = asyncio.create_task(inserter.insert({"_id": "leaving"}))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.gather(*blockers)
    await inserter.drain()
    assert leaving.cancelled()
    assert await collection.find_one({"_id": "leaving"}) == {"_id": "leaving"}


async def test_a_failed_write_is_raised_to_every_caller_of_the_batch() -> None:
    # A server that is not there: the write fails, and no caller is told it was stored.
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(
        "mongodb://127.0.0.1:9/?directConnection=true&serverSelectionTimeoutMS=200"
    )
    inserter = Inserter(GroupCommit(mongo.get_default_database("x")["requestlogs"]))
    results = await asyncio.gather(
        *(inserter.insert({"_id": i}) for i in range(3)), return_exceptions=True
    )
    await mongo.close()
    assert all(isinstance(result, PyMongoError) for result in results), results


async def test_updates_in_one_batch_each_learn_whether_they_applied(
    collection: AsyncCollection[Document],
) -> None:
    await collection.insert_many([{"_id": "a", "n": 0}, {"_id": "b", "n": 5}])
    target = CountingCollection(collection)
    group = GroupCommit(target)

    def bump_if(key: str, expected: int) -> UpdateOne:
        # The upsert turns "no match" into a duplicate-_id error of its own.
        return UpdateOne({"_id": key, "n": expected}, {"$inc": {"n": 1}}, upsert=True)

    results = await asyncio.gather(
        group.write(bump_if("a", 0), refused=DUPLICATE),
        group.write(bump_if("a", 0), refused=DUPLICATE),  # "a" is 1 by then
        group.write(bump_if("b", 4), refused=DUPLICATE),
        group.write(bump_if("b", 5), refused=DUPLICATE),
    )
    assert list(results) == [True, False, False, True]
    assert target.batches == [4]  # one command; the second "a" sees the first applied
    assert {d["_id"]: d["n"] async for d in collection.find()} == {"a": 1, "b": 6}


async def test_an_error_not_listed_as_refused_is_raised_to_its_caller_only(
    collection: AsyncCollection[Document],
) -> None:
    await collection.insert_one({"_id": "a", "n": "text"})
    group = GroupCommit(collection)
    bad = group.write(UpdateOne({"_id": "a"}, {"$inc": {"n": 1}}), refused=DUPLICATE)
    good = group.write(InsertOne({"_id": "b"}), refused=DUPLICATE)
    results = await asyncio.gather(bad, good, return_exceptions=True)
    assert isinstance(results[0], BulkWriteError)  # $inc on a string
    assert results[1] is True
