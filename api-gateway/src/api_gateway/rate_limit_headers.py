"""Rate-limit headers on every authenticated response: IETF draft and OpenAI style (and the
response cache's verdict, `x-infergate-cache: hit|miss`, on chats while the cache is on).

Routes record what they learned (the request window, the monthly tokens) in the request scope;
a pure ASGI middleware writes the headers when the response starts, errors included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_gateway.rate_limit import Decision

_STATE_KEY = "rate_limit_headers"


@dataclass
class TokenBudget:
    limit: int
    remaining: int


def go_duration(ms: int) -> str:
    """A Go-style duration (`350ms`, `6s`, `1m30s`, `2h0m5s`), as OpenAI's reset headers use."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def ms_until_next_month(now: datetime | None = None) -> int:
    moment = now or datetime.now(UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return int((datetime(year, month, 1, tzinfo=UTC) - moment).total_seconds() * 1000)


def _slot(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    slot: dict[str, Any] = state.setdefault(_STATE_KEY, {})
    return slot


def record_requests(scope: Scope, decision: Decision) -> None:
    _slot(scope)["requests"] = decision


def record_tokens(scope: Scope, budget: TokenBudget | None) -> None:
    if budget is not None:
        _slot(scope)["tokens"] = budget


def record_cache(scope: Scope, *, hit: bool) -> None:
    _slot(scope)["cache"] = "hit" if hit else "miss"


def build_headers(
    decision: Decision | None, tokens: TokenBudget | None, cache: str | None = None
) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = [("x-infergate-cache", cache)] if cache else []
    if decision is not None and not decision.degraded:
        reset_s = math.ceil(decision.reset_ms / 1000)
        headers += [
            ("ratelimit-policy", f'"requests";q={decision.limit};w={decision.window_s}'),
            ("ratelimit", f'"requests";r={decision.remaining};t={reset_s}'),
            ("x-ratelimit-limit-requests", str(decision.limit)),
            ("x-ratelimit-remaining-requests", str(decision.remaining)),
            ("x-ratelimit-reset-requests", go_duration(decision.reset_ms)),
        ]
        if not decision.allowed:
            headers += [
                ("retry-after", str(decision.retry_after_seconds)),
                ("retry-after-ms", str(decision.reset_ms)),
            ]
    if tokens is not None:
        headers += [
            ("x-ratelimit-limit-tokens", str(tokens.limit)),
            ("x-ratelimit-remaining-tokens", str(max(tokens.remaining, 0))),
            ("x-ratelimit-reset-tokens", go_duration(ms_until_next_month())),
        ]
    return headers


class RateLimitHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                slot = scope.get("state", {}).get(_STATE_KEY)
                if slot:
                    extra = build_headers(
                        slot.get("requests"), slot.get("tokens"), slot.get("cache")
                    )
                    names = {name for name, _ in extra}
                    message["headers"] = [
                        (k, v) for k, v in message.get("headers", []) if k.decode() not in names
                    ] + [(k.encode(), v.encode()) for k, v in extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
