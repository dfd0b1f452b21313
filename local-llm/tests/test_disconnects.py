"""A client that goes away frees the one generation worker, whether running or still queued."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import ollama

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
LONG = {"temperature": 0, "num_predict": 100_000}  # capped by the server's limit


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    lines = log.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return [record for record in records if record.get("event") == event]


async def wait_for_events(log: Path, event: str, count: int) -> list[dict[str, Any]]:
    """Poll the server's log until `count` `event` lines are there (the server logs async)."""
    for _ in range(300):
        found = log_events(log, event)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"the server never logged {count} x {event}")


async def test_a_client_leaving_mid_stream_stops_its_generation(
    client: ollama.AsyncClient, local_llm_log: Path
) -> None:
    cancelled_before = len(log_events(local_llm_log, "generation_cancelled"))
    stream = await client.generate("llama3", COUNTING, raw=True, stream=True, options=LONG)
    assert isinstance(stream, AsyncGenerator)
    async for part in stream:
        assert not part.done
        break
    await stream.aclose()  # closes the HTTP response mid-stream

    cancelled = await wait_for_events(local_llm_log, "generation_cancelled", cancelled_before + 1)
    assert cancelled[-1]["eval_count"] < 100
    after = await client.generate("llama3", COUNTING, raw=True, options={"num_predict": 3})
    assert after.done
    assert after.eval_count == 3


async def test_a_client_leaving_while_queued_is_skipped(
    client: ollama.AsyncClient, local_llm_log: Path
) -> None:
    skipped_before = len(log_events(local_llm_log, "generation_skipped"))
    queued_before = len(log_events(local_llm_log, "generation_queued"))
    running = await client.generate("llama3", COUNTING, raw=True, stream=True, options=LONG)
    first = await anext(running)  # the worker is now busy with this one
    assert not first.done
    waiting = asyncio.create_task(client.generate("llama3", COUNTING, raw=True, options=LONG))
    await wait_for_events(local_llm_log, "generation_queued", queued_before + 2)
    waiting.cancel()  # the waiting client goes away before its turn

    rest = [part async for part in running]
    assert rest[-1].done
    await wait_for_events(local_llm_log, "generation_skipped", skipped_before + 1)
