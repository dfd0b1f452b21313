"""Letting a chat in: the user's rate limit, then the token reservation; headers recorded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from fastapi import Request
from infergate_common.errors import AppError, BadRequestError, ForbiddenError, RateLimitedError

from api_gateway.chat import ChatTurn
from api_gateway.chat_events import Admitted
from api_gateway.clients import UsageClient
from api_gateway.config import Settings
from api_gateway.rate_limit import Decision, SlidingWindowLimiter
from api_gateway.rate_limit_headers import (
    TokenBudget,
    record_cache,
    record_requests,
    record_tokens,
)
from api_gateway.schemas import ModelCall, MonthlyUsage, VerifiedUser
from api_gateway.settler import Settler

_log = structlog.get_logger("admission")


def user_window(user: VerifiedUser, settings: Settings) -> tuple[str, int, int]:
    """The user's window: its key carries the user's hash tag, the slot of their key versions
    (checked in the same script, see count_chat)."""
    return (
        f"rate_limit:{{{user.userId}}}",
        settings.rate_limit(user.plan),
        settings.rate_limit_window,
    )


async def count_request(
    request: Request, limiter: SlidingWindowLimiter, settings: Settings, user: VerifiedUser
) -> Decision:
    """Count the request in the user's window; 429 with Retry-After when it is full."""
    key, limit, window = user_window(user, settings)
    return _counted(request, await limiter.hit(key, limit=limit, window_s=window))


async def count_chat(request: Request, limiter: SlidingWindowLimiter, turn: ChatTurn) -> Decision:
    """`count_request` for a chat whose key verification came from the cache unchecked: the
    check and the count in one round trip; when the verification is stale (or the check could
    not be made) nothing is counted, the key is verified afresh (401 if it no longer is), and
    the request is counted under what it verifies to now (a changed plan's limit)."""
    unconfirmed, turn.unconfirmed = turn.unconfirmed, None
    if unconfirmed is not None:
        key, limit, window = user_window(turn.user, turn.settings)
        decision = await limiter.hit_if_current(
            key, limit=limit, window_s=window, check=unconfirmed.check
        )
        if decision is not None:
            unconfirmed.confirmed()
            return _counted(request, decision)
        turn.user = await unconfirmed.reverify()
        structlog.contextvars.bind_contextvars(user_id=turn.user.userId)
    return await count_request(request, limiter, turn.settings, turn.user)


def _counted(request: Request, decision: Decision) -> Decision:
    record_requests(request.scope, decision)
    if not decision.allowed:
        raise RateLimitedError(headers={"Retry-After": str(decision.retry_after_seconds)})
    return decision


async def show_window(
    request: Request, limiter: SlidingWindowLimiter, settings: Settings, user: VerifiedUser
) -> None:
    """Record the window's state for the headers without counting this request."""
    key, limit, window = user_window(user, settings)
    decision = await limiter.peek(key, limit=limit, window_s=window)
    if decision is not None:
        record_requests(request.scope, decision)


def record_usage(request: Request, usage: MonthlyUsage | None) -> None:
    if usage is not None:
        remaining = usage.monthlyTokenLimit - usage.usedTokens - usage.reservedTokens
        record_tokens(request.scope, TokenBudget(usage.monthlyTokenLimit, remaining))


async def record_current_usage(request: Request, usage: UsageClient, user: VerifiedUser) -> None:
    """The token headers from the user's month now (left out if usage-service cannot say)."""
    try:
        record_usage(request, await usage.monthly(user))
    except AppError as exc:  # the refusal stands; only its token headers are missing
        _log.warning("usage_headers_unavailable", code=exc.error_code)


def check_prompt_length(call: ModelCall, settings: Settings) -> None:
    if sum(len(m["content"]) for m in call.messages) > settings.max_prompt_chars:
        raise BadRequestError(
            f"Prompt is too long (at most {settings.max_prompt_chars} characters)",
            code="prompt_too_long",
        )


async def admit(
    request: Request,
    *,
    turn: ChatTurn,
    call: ModelCall,
    limiter: SlidingWindowLimiter,
    early: bool = False,
) -> Admitted:
    """Rate limit, then reserve; both refusals are logged as attempts and carry their headers.
    A chat the quota refuses gives its place in the rate-limit window back. `early`: the model
    call may start during the reservation (a plain answer; see ChatTurn.reserve)."""
    check_prompt_length(call, turn.settings)
    try:
        decision = await count_chat(request, limiter, turn)
    except RateLimitedError:
        await turn.log_rate_limited(call.model)
        raise
    try:
        admitted = await turn.reserve(call, early=early)
    except ForbiddenError:
        key, _, _ = user_window(turn.user, turn.settings)
        record_requests(request.scope, await limiter.refund(key, decision))
        await record_current_usage(request, turn.usage, turn.user)
        raise
    if turn.cache is not None and turn.cache.enabled:
        record_cache(request.scope, hit=admitted.hit is not None)
    reservation = admitted.reservation
    record_tokens(
        request.scope,
        TokenBudget(reservation.monthly_token_limit, reservation.remaining_tokens),
    )
    return admitted


@dataclass(frozen=True, slots=True)
class AccountView:
    """What a read of a user's own account needs: the user's chats settled first (so the last one
    shows), and the rate-limit headers of every authenticated response (the window peeked at, not
    counted; the month's tokens)."""

    request: Request
    usage: UsageClient
    limiter: SlidingWindowLimiter
    settings: Settings
    settler: Settler

    async def settled(self, user: VerifiedUser) -> None:
        await self.settler.applied_for(user.userId, timeout_s=self.settings.usage_timeout)

    async def show_limits(self, user: VerifiedUser) -> None:
        await asyncio.gather(
            record_current_usage(self.request, self.usage, user),
            show_window(self.request, self.limiter, self.settings, user),
        )
