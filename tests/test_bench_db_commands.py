"""The benchmark's database commands per request, read from a real SecantusDB's opcounters."""

from __future__ import annotations

import uuid
from typing import Any

from infergate_devstack.components.datastores import mongo_uri
from pymongo import MongoClient
from pymongo.collection import Collection

from bench.figures import db_commands_per_request
from bench.points import db_opcounters


def test_commands_per_request_count_each_kind_sent_during_the_point(mongo_port: int) -> None:
    uri = mongo_uri(mongo_port, f"bench-{uuid.uuid4().hex[:8]}")
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri) as client:
        collection: Collection[dict[str, Any]] = client.get_default_database()["chats"]
        collection.insert_one({"_id": "warm"})  # the connection is open before the point
        before = db_opcounters(uri)
        for number in range(4):
            collection.insert_one({"_id": number})
        for number in range(2):
            collection.update_one({"_id": number}, {"$set": {"seen": True}})
        assert collection.find_one({"_id": 3}) == {"_id": 3}
        after = db_opcounters(uri)
    per_request = db_commands_per_request(before, after, requests=2)
    assert (per_request["insert"], per_request["update"], per_request["query"]) == (2.0, 1.0, 0.5)
    assert per_request["delete"] == 0.0
    assert db_commands_per_request(before, after, requests=0) == {}
