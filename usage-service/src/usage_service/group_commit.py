"""Group commit: concurrent single-document writes sent together as one unordered `bulkWrite`,
each caller still waiting for, and told the outcome of, its own write.

On the MongoDB stand-in (SecantusDB) every command pays a fixed cost and concurrent commands
slow each other down (a global storage lock behind a GIL): measured, one update costs 0.34 ms
alone, 0.44-0.50 ms per update when many run at once, and 0.13 ms inside a bulk of 16; an
`insert_many` of 16 documents costs about what one `insert_one` does. Batching therefore cuts
both the database's CPU per chat and the queueing in front of it.

Nothing is acknowledged before it is written: `write` returns only once the batch holding the
operation is stored with the collection's write concern (majority, see infergate_common.mongo),
and raises if it was not, so a caller answers 2xx only for writes that are in the database and
survive a failover. A batch the primary applied but a majority did not confirm (a write concern
error) is raised to every caller as well. There is no timer: while one batch is being written
the next one fills, so a lone request is written at once and a busy service writes fewer, larger
batches.

A bulk write reports errors per operation but matches only as a total, so an update that must
say whether it applied is written so that "not applied" is an error of its own (see the
repository: an upsert whose insert cannot happen); `write` is told which error codes mean "not
applied" (False) rather than failure (raised).

Each GroupCommit writes one kind of operation (the ledger updates, the log inserts): PyMongo 4.20
silently drops the later kinds of a mixed bulk when it retries one whose first attempt failed
before it was sent (seen across a database restart).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from infergate_common.mongo import once_more_if_cut
from prometheus_client import Histogram
from pymongo import DeleteOne, InsertOne, UpdateOne
from pymongo.errors import BulkWriteError, WriteConcernError

Document = dict[str, Any]
Operation = InsertOne[Document] | UpdateOne | DeleteOne
Pending = tuple[Operation, frozenset[int], asyncio.Future[bool]]
DUPLICATE_KEY = 11000
DEFAULT_MAX_BATCH = 256


class BulkWritable(Protocol):
    """What is written to: an `AsyncCollection`."""

    async def bulk_write(self, requests: Sequence[Operation], *, ordered: bool) -> object: ...


class GroupCommit:
    """Single-threaded (the event loop's); one batch in flight at a time, per collection."""

    def __init__(
        self,
        collection: BulkWritable,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        batch_sizes: Histogram | None = None,
    ) -> None:
        self._collection = collection
        self._max_batch = max_batch
        self._batch_sizes = batch_sizes  # observes each batch's size
        self._pending: list[Pending] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, operation: Operation, *, refused: frozenset[int]) -> bool:
        """Apply `operation`: True when it applied, False when it failed with one of the
        `refused` error codes (e.g. a duplicate `_id`); any other failure is raised."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)
        self._pending.append((operation, refused, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_batches())
        # Shielded: a caller that goes away must not cancel the write other callers wait on;
        # its own operation is still applied.
        return await asyncio.shield(done)

    async def drain(self) -> None:
        """Wait until everything accepted so far is written (called on shutdown)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write_batches(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                if self._batch_sizes is not None:
                    self._batch_sizes.observe(len(batch))
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: list[Pending]) -> None:
        operations = [op for op, _, _ in batch]
        try:
            # Every operation written this way is safe to repeat (see the repository): a batch
            # whose connection broke is written again.
            await once_more_if_cut(lambda: self._collection.bulk_write(operations, ordered=False))
            errors: dict[int, Document] = {}
        except BulkWriteError as exc:
            unconfirmed = exc.details.get("writeConcernErrors") or []
            if unconfirmed:  # applied, but not known to be on a majority: a failover may undo it
                first = unconfirmed[0]
                _fail(batch, WriteConcernError(first.get("errmsg", ""), first.get("code"), first))
                return
            errors = {int(e["index"]): e for e in exc.details.get("writeErrors", [])}
        except BaseException as exc:  # the whole batch failed: every caller gets the error
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for index, (_, refused, done) in enumerate(batch):
            error = errors.get(index)
            if done.done():
                continue
            if error is None:
                done.set_result(True)
            elif error.get("code") in refused:
                done.set_result(False)
            else:
                done.set_exception(BulkWriteError({"writeErrors": [error], "nInserted": 0}))


def _fail(batch: list[Pending], error: BaseException) -> None:
    for _, _, done in batch:
        if not done.done():
            done.set_exception(error)


def _retrieve(done: asyncio.Future[bool]) -> None:
    """Mark a failure as seen even if its caller went away (no "never retrieved" warning);
    a caller still waiting gets it raised all the same."""
    if not done.cancelled():
        done.exception()
