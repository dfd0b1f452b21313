"""Garbage-collector settings for a long-running service, applied once startup is done.

Measured under load (2,000 users, 32 concurrent chats), CPython's cyclic collector took 8-13 %
of each service's CPU: about 190 collections a second, a few of them full ones walking every
object the process holds (FastAPI's routes and models, pydantic's validators, the pymongo and
aiohttp clients). Almost everything a request allocates is freed by reference counting, so:

- `gc.freeze()` after startup moves the objects that live as long as the process out of the
  collector's sight (they are never garbage), so a full collection only walks what requests
  created since;
- a higher first-generation threshold makes collections rarer (each still finds the cycles).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

# CPython's default is (700, 10, 10): a young collection every 700 net allocations.
GC_THRESHOLDS = (50_000, 20, 10)

App = TypeVar("App")


def settle_heap() -> None:
    """Collect once, then freeze what survived and space collections out."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def with_gc_tuning(
    lifespan: Callable[[App], AbstractAsyncContextManager[Any]],
) -> Callable[[App], AbstractAsyncContextManager[Any]]:
    """`lifespan`, followed by `settle_heap` once it has started everything."""

    @asynccontextmanager
    async def tuned(app: App) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            settle_heap()
            yield state

    return tuned
