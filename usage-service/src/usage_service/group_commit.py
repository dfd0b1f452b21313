"""Group commit: concurrent single-document inserts written together, each caller still waiting
for its own document to be stored.

On the MongoDB stand-in an `insert_many` of 16 documents costs about what one `insert_one` does
(0.76 ms against 0.74 ms, measured), so under load the request log costs a fraction of a write
per chat. Nothing is acknowledged before it is written: `insert` returns only once the batch
holding the document is stored, and raises if it was not, so a caller answers 2xx only for
entries that are in the database (the gateway retries a failed settle; the entry's `_id` makes
the retry a no-op).

There is no timer: while one batch is being written the next one fills, so a lone request is
written at once and a busy service writes fewer, larger batches.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from pymongo.errors import BulkWriteError

Document = dict[str, Any]
DUPLICATE_KEY = 11000
DEFAULT_MAX_BATCH = 256


class InsertMany(Protocol):
    """What is written to: an `AsyncCollection`."""

    async def insert_many(self, documents: list[Document], *, ordered: bool) -> object: ...


class GroupCommitInserter:
    """Single-threaded (the event loop's); one batch in flight at a time."""

    def __init__(self, collection: InsertMany, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._collection = collection
        self._max_batch = max_batch
        self._pending: list[tuple[Document, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def insert(self, document: Document) -> bool:
        """Store `document`; False when its `_id` was already stored (a repeated write)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)
        self._pending.append((document, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_batches())
        # Shielded: a caller that goes away must not cancel the write other callers wait on;
        # its own document is still written.
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
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: list[tuple[Document, asyncio.Future[bool]]]) -> None:
        try:
            await self._collection.insert_many([document for document, _ in batch], ordered=False)
            outcomes: dict[int, bool | Exception] = {}
        except BulkWriteError as exc:
            outcomes = _outcomes_of(exc)
        except BaseException as exc:  # the whole batch failed: every caller gets the error
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for index, (_, done) in enumerate(batch):
            outcome = outcomes.get(index, True)
            if done.done():
                continue
            if isinstance(outcome, Exception):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)


def _outcomes_of(error: BulkWriteError) -> dict[int, bool | Exception]:
    """Per position in the batch: False for a duplicate `_id`, the error for other failures
    (positions not listed were written)."""
    outcomes: dict[int, bool | Exception] = {}
    for write_error in error.details.get("writeErrors", []):
        index = int(write_error["index"])
        if write_error.get("code") == DUPLICATE_KEY:
            outcomes[index] = False
        else:
            outcomes[index] = BulkWriteError({"writeErrors": [write_error], "nInserted": 0})
    return outcomes


def _retrieve(done: asyncio.Future[bool]) -> None:
    """Mark a failure as seen even if its caller went away (no "never retrieved" warning);
    a caller still waiting gets it raised all the same."""
    if not done.cancelled():
        done.exception()
