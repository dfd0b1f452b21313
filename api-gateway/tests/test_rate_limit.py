"""The sliding-window limiter against a real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis
from api_gateway.rate_limit import SlidingWindowLimiter
from infergate_common.errors import UpstreamUnavailableError
from recorded_metrics import Recorded

DECISIONS = "infergate_rate_limit_decisions_total"


@pytest.fixture
async def limiter(redis_port: int, recorded: Recorded) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(
        redis.Redis(port=redis_port), fail_open=True, name="user", metrics=recorded.metrics
    )


def unreachable(recorded: Recorded, *, fail_open: bool) -> SlidingWindowLimiter:
    client = redis.Redis(port=9, socket_connect_timeout=0.2)
    return SlidingWindowLimiter(client, fail_open=fail_open, name="user", metrics=recorded.metrics)


async def test_concurrent_hits_in_one_millisecond_all_count(
    limiter: SlidingWindowLimiter, recorded: Recorded
) -> None:
    key = f"t:{uuid.uuid4().hex}"
    decisions = await asyncio.gather(*(limiter.hit(key, limit=10, window_s=60) for _ in range(25)))
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))
    assert recorded.value(DECISIONS, limiter="user", decision="allowed") == 10
    assert recorded.value(DECISIONS, limiter="user", decision="limited") == 15


async def test_the_window_slides(limiter: SlidingWindowLimiter) -> None:
    key = f"t:{uuid.uuid4().hex}"
    assert (await limiter.hit(key, limit=1, window_s=1)).allowed
    refused = await limiter.hit(key, limit=1, window_s=1)
    assert not refused.allowed
    assert 0 < refused.reset_ms <= 1000
    assert refused.retry_after_seconds == 1
    await asyncio.sleep(refused.reset_ms / 1000 + 0.05)
    assert (await limiter.hit(key, limit=1, window_s=1)).allowed


async def test_unreachable_redis_fails_open_and_counts(recorded: Recorded) -> None:
    limiter = unreachable(recorded, fail_open=True)
    decision = await limiter.hit("t:x", limit=1, window_s=60)
    assert decision.allowed
    assert decision.degraded
    assert limiter.failures == 1
    assert recorded.value(DECISIONS, limiter="user", decision="failed_open") == 1
    assert recorded.value(DECISIONS, limiter="user", decision="allowed") == 0
    assert recorded.value("infergate_redis_errors_total", operation="rate_limit") == 1


async def test_unreachable_redis_fails_closed_with_503(recorded: Recorded) -> None:
    limiter = unreachable(recorded, fail_open=False)
    with pytest.raises(UpstreamUnavailableError):
        await limiter.hit("t:x", limit=1, window_s=60)
    assert recorded.value(DECISIONS, limiter="user", decision="failed_closed") == 1


async def test_after_a_lowered_limit_nothing_is_negative_and_retry_waits_for_enough_room(
    limiter: SlidingWindowLimiter,
) -> None:
    """A plan downgrade (100 -> 3 a window) with 6 requests already in the window: the next one
    is allowed only once 4 have left it, not when the oldest does."""
    key = f"t:{uuid.uuid4().hex}"
    for _ in range(3):
        assert (await limiter.hit(key, limit=100, window_s=2)).allowed
    await asyncio.sleep(0.5)
    for _ in range(3):
        assert (await limiter.hit(key, limit=100, window_s=2)).allowed
    refused = await limiter.hit(key, limit=3, window_s=2)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.reset_ms > 1200  # the 4th oldest (0.5 s younger) leaves ~1.5 s from now
    peeked = await limiter.peek(key, limit=3, window_s=2)
    assert peeked is not None
    assert peeked.remaining == 0


async def test_a_refunded_request_gives_its_place_back(limiter: SlidingWindowLimiter) -> None:
    key = f"t:{uuid.uuid4().hex}"
    counted = await limiter.hit(key, limit=2, window_s=60)
    refunded = await limiter.refund(key, counted)
    assert refunded.remaining == counted.remaining + 1
    assert [(await limiter.hit(key, limit=2, window_s=60)).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
