"""Sliding-window-log rate limiting in Redis: check and record in one atomic Lua script.

Each allowed request adds a unique member to a sorted set scored by Redis' own clock, so replicas
agree on time and two requests in the same millisecond both count. A refused request is not
recorded, and the answer says when the oldest entry leaves the window (the honest Retry-After).
Each script touches one key, so windows spread over every primary of a Redis Cluster.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from dataclasses import dataclass

import structlog
from infergate_common.errors import UpstreamUnavailableError
from redis.exceptions import RedisError

from api_gateway.key_versions import VersionCheck
from api_gateway.redis_store import LuaScript, RedisClient
from api_gateway.telemetry import GatewayMetrics

_log = structlog.get_logger("rate_limit")

# KEYS[1] = the window's sorted set; ARGV = window_ms, limit, unique member, record (1) or
# only look (0). Returns {allowed (0/1), remaining, ms until the oldest entry leaves the window}.
_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  allowed = 1
  if ARGV[4] == '1' then
    redis.call('ZADD', KEYS[1], now, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], window)
    count = count + 1
  end
end
-- When more requests are in the window than the limit allows (the limit was lowered, as by a
-- plan downgrade), the next one is allowed once all but limit - 1 of them have left it.
local first = math.max(count - limit, 0)
local oldest = redis.call('ZRANGE', KEYS[1], first, first, 'WITHSCORES')
local reset = window
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
return {allowed, math.max(limit - count, 0), reset}
"""

# The same, first checking a cached key verification the way KeyVersions.is_current does, so a
# chat's key check and its count are one round trip: KEYS[2] = the user's latest version,
# KEYS[3] = the key's doubt mark (the window key carries the user's hash tag: one slot);
# ARGV[5] = the version the cached verification saw. {-1, 0, 0} and nothing counted when the
# verification is stale (no version stored, a newer one, or the key in doubt).
_WINDOW_IF_CURRENT = (
    """
local latest = redis.call('GET', KEYS[2])
if (not latest) or tonumber(latest) > tonumber(ARGV[5]) or redis.call('EXISTS', KEYS[3]) == 1 then
  return {-1, 0, 0}
end
"""
    + _WINDOW
)
STALE = -1


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_ms: int
    window_s: int = 0
    degraded: bool = False
    member: str | None = None  # what this request added to the window (to take it back)

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.reset_ms / 1000))


class SlidingWindowLimiter:
    """`name` labels its decisions in the metrics (`infergate_rate_limit_decisions_total`)."""

    def __init__(
        self, client: RedisClient, *, fail_open: bool, name: str, metrics: GatewayMetrics
    ) -> None:
        self._client = client
        self._script = LuaScript(client, _WINDOW)
        self._if_current = LuaScript(client, _WINDOW_IF_CURRENT)
        self._fail_open = fail_open
        self.failures = 0
        self._metrics = metrics
        self._decisions = {
            decision: metrics.rate_limit_decisions.labels(name, decision)
            for decision in ("allowed", "limited", "failed_open", "failed_closed")
        }

    async def hit(self, key: str, *, limit: int, window_s: int) -> Decision:
        """Count one request against `key`; refuse it when the window is full."""
        try:
            decision = await self._run(key, limit=limit, window_s=window_s, record=True)
        except UpstreamUnavailableError:
            self._decisions["failed_closed"].inc()
            raise
        if decision.degraded:
            self._decisions["failed_open"].inc()
        else:
            self._decisions["allowed" if decision.allowed else "limited"].inc()
        return decision

    async def hit_if_current(
        self, key: str, *, limit: int, window_s: int, check: VersionCheck
    ) -> Decision | None:
        """`hit`, in the same round trip as checking a cached key verification (`check`) against
        the user's latest version: None, and nothing counted, when the verification is stale or
        Redis did not answer (the caller verifies the key afresh, then calls `hit`). `key` must
        be in the user's hash slot (`user_window`)."""
        member = uuid.uuid4().hex
        try:
            allowed, remaining, reset_ms = await self._if_current(
                keys=[key, *check.keys],
                args=[window_s * 1000, limit, member, 1, check.version],
            )
        except RedisError as exc:
            self._metrics.redis_errors.labels("rate_limit").inc()
            _log.debug("key_version_unavailable", error_type=type(exc).__name__)
            return None
        if allowed == STALE:
            return None
        decision = _answered(allowed, remaining, reset_ms, limit, window_s, member)
        self._decisions["allowed" if decision.allowed else "limited"].inc()
        return decision

    async def peek(self, key: str, *, limit: int, window_s: int) -> Decision | None:
        """The window's state without counting a request (for the headers of other calls);
        None when Redis does not answer: a route that only shows the window never fails for it,
        whatever RATE_LIMIT_FAILURE_MODE says for the routes it limits."""
        try:
            return await self._run(key, limit=limit, window_s=window_s, record=False, quiet=True)
        except RedisError:
            return None

    async def refund(self, key: str, decision: Decision) -> Decision:
        """Take back a request that was counted but not served (its quota refused it); the
        window as it is then."""
        if decision.member is None or not decision.allowed:
            return decision
        try:
            await self._client.zrem(key, decision.member)
        except RedisError as exc:
            self._metrics.redis_errors.labels("rate_limit").inc()
            _log.warning("rate_limit_refund_failed", error_type=type(exc).__name__)
            return decision
        return dataclasses.replace(decision, remaining=decision.remaining + 1, member=None)

    async def _run(
        self, key: str, *, limit: int, window_s: int, record: bool, quiet: bool = False
    ) -> Decision:
        member = uuid.uuid4().hex
        try:
            allowed, remaining, reset_ms = await self._script(
                keys=[key], args=[window_s * 1000, limit, member, int(record)]
            )
        except RedisError as exc:
            self._metrics.redis_errors.labels("rate_limit").inc()
            if quiet:
                raise
            self.failures += 1
            if not self._fail_open:
                _log.error("rate_limiter_unavailable", mode="closed", error_type=type(exc).__name__)
                raise UpstreamUnavailableError(
                    "Rate limiter unavailable", code="rate_limiter_unavailable"
                ) from exc
            _log.warning(
                "rate_limiter_unavailable",
                mode="open",
                error_type=type(exc).__name__,
                failures=self.failures,
            )
            return Decision(True, limit, limit, window_s * 1000, window_s, degraded=True)
        return _answered(allowed, remaining, reset_ms, limit, window_s, member if record else None)


def _answered(
    allowed: int, remaining: int, reset_ms: int, limit: int, window_s: int, member: str | None
) -> Decision:
    """The window scripts' answer as a Decision; `member` is kept only if it was counted."""
    return Decision(
        bool(allowed),
        limit,
        int(remaining),
        int(reset_ms),
        window_s,
        member=member if allowed else None,
    )
