"""Failed authentications per client network: a caller that keeps presenting wrong keys gets 429
before its next attempt costs a call to auth-service (and a MongoDB read).

Counted in a Redis sliding window per network (an IPv4 address, an IPv6 /64). Always fails open:
with Redis away nobody is locked out, whatever RATE_LIMIT_FAILURE_MODE says for chats.
"""

from __future__ import annotations

from infergate_common.errors import RateLimitedError

from api_gateway.rate_limit import Decision, SlidingWindowLimiter


class AuthFailures:
    def __init__(self, limiter: SlidingWindowLimiter, *, limit: int, window_s: int) -> None:
        self._limiter = limiter
        self._limit = limit
        self._window_s = window_s

    async def check(self, network: str) -> None:
        """429 when the network has used up its failed attempts."""
        decision = await self._limiter.peek(
            _key(network), limit=self._limit, window_s=self._window_s
        )
        if decision is not None and not decision.allowed:
            raise _refusal(decision)

    async def failed(self, network: str) -> None:
        """Count a failed attempt; 429 (instead of the 401) once over the limit."""
        decision = await self._limiter.hit(
            _key(network), limit=self._limit, window_s=self._window_s
        )
        if not decision.allowed:
            raise _refusal(decision)


def _key(network: str) -> str:
    return f"rate_limit:authfail:{network}"


def _refusal(decision: Decision) -> RateLimitedError:
    return RateLimitedError(
        "Too many failed authentications from this address. Try again later.",
        code="auth_rate_limited",
        headers={"Retry-After": str(decision.retry_after_seconds)},
    )
