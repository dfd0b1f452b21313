"""Several replicas of one internal service behind one wire.

Each request goes to one replica: the one its affinity (a user id) hashes to, so that the same
user meets the same usage-service process and its quota hints stay warm, or the next in turn when
it has none. A replica that refuses a connection is skipped for a few seconds (tried last, not
never: when every replica refuses, each is still tried once), and the request goes to the next one.
Only a refused connection moves a request: the request never left, so nothing can happen twice.
A reset or a timeout after the request was sent is the caller's error, as with one replica,
because the replica may have acted on it (a registration, a reservation).
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from infergate_common.wire import RawResponse, RawStream, Wire, WireRefusedError

# How long a replica that refused a connection goes to the back of the queue.
EJECT_SECONDS = 2.0


class BalancedWire:
    def __init__(
        self,
        replicas: Sequence[Wire],
        *,
        eject_seconds: float = EJECT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not replicas:
            raise ValueError("a balanced wire needs at least one replica")
        self._replicas = list(replicas)
        self._down_until = [0.0] * len(replicas)
        self._eject_s = eject_seconds
        self._clock = clock
        self._turn = itertools.count()

    def route(self, affinity: str) -> int:
        return self._order(affinity)[0]

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        params: Mapping[str, str] | None,
        seconds: float | None,
        affinity: str | None = None,
    ) -> RawResponse:
        order = self._order(affinity)
        for attempt, index in enumerate(order):
            try:
                return await self._replicas[index].send(
                    method, path, json=json, params=params, seconds=seconds
                )
            except WireRefusedError:
                self._eject(index)
                if attempt == len(order) - 1:
                    raise
        raise AssertionError("unreachable: the last refusal is raised")

    @asynccontextmanager
    async def stream(
        self, path: str, *, json: Any, affinity: str | None = None
    ) -> AsyncIterator[RawStream]:
        order = self._order(affinity)
        async with AsyncExitStack() as stack:
            for attempt, index in enumerate(order):
                try:
                    raw = await stack.enter_async_context(
                        self._replicas[index].stream(path, json=json)
                    )
                    break
                except WireRefusedError:
                    self._eject(index)
                    if attempt == len(order) - 1:
                        raise
            yield raw

    async def close(self) -> None:
        for replica in self._replicas:
            await replica.close()

    def _order(self, affinity: str | None) -> list[int]:
        """Replicas in the order to try: from the affinity's (or the next in turn), the ones
        that refused lately last."""
        count = len(self._replicas)
        if affinity is None:
            first = next(self._turn) % count
        else:
            first = zlib.crc32(affinity.encode()) % count
        order = [(first + step) % count for step in range(count)]
        now = self._clock()
        return sorted(order, key=lambda index: self._down_until[index] > now)

    def _eject(self, index: int) -> None:
        self._down_until[index] = self._clock() + self._eject_s
