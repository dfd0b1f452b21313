"""Stopping background tasks for sure, even one that swallows a cancellation."""

from __future__ import annotations

import asyncio

from infergate_common.tasks import cancel_and_wait


async def test_a_loop_that_swallows_the_first_cancellation_is_stopped_all_the_same() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:  # as a client turning it into its own timeout
                swallowed += 1
                if swallowed > 2:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await cancel_and_wait(task, timeout_s=5)
    assert task.cancelled()
    assert swallowed == 3


async def test_a_task_that_will_not_stop_is_given_up_on_after_the_timeout() -> None:
    released = asyncio.Event()

    async def immortal() -> None:
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(immortal())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await cancel_and_wait(task, timeout_s=0.3)
    assert not task.done()
    assert loop.time() - started < 1.0
    released.set()  # let it end: no task outlives the test
    await asyncio.wait_for(task, timeout=1)
