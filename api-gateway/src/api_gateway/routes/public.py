"""The public InferGate API (reached through nginx): register, chat, usage and the auth test."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, status
from infergate_common.errors import BadRequestError, RateLimitedError

from api_gateway.chat import ChatTurn, check_rate_limit
from api_gateway.deps import (
    AiClientDep,
    AuthClientDep,
    ClientAddressDep,
    CurrentUser,
    LimiterDep,
    RequestIdDep,
    SettingsDep,
    UsageClientDep,
)
from api_gateway.schemas import (
    AccessGranted,
    ChatRequest,
    ChatResponse,
    ErrorBody,
    RegisterRequest,
    RegisterResponse,
    UsageSummary,
)

router = APIRouter(tags=["public"])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


@router.post(
    "/v1/register",
    status_code=status.HTTP_201_CREATED,
    response_model=RegisterResponse,
    responses=_errors(400, 409, 429, 503, 504),
)
async def register(
    body: RegisterRequest,
    auth: AuthClientDep,
    limiter: LimiterDep,
    settings: SettingsDep,
    address: ClientAddressDep,
) -> RegisterResponse:
    """Create an account and return its API key (shown once). Limited per client address."""
    decision = await limiter.hit(
        f"rate_limit:register:{address}",
        limit=settings.registration_rate_limit,
        window_s=settings.registration_rate_window,
    )
    if not decision.allowed:
        raise RateLimitedError(
            "Too many registrations from this address. Try again later.",
            code="registration_rate_limited",
            headers={"Retry-After": str(decision.retry_after_seconds)},
        )
    api_key, plan = await auth.register(body.email)
    return RegisterResponse(apiKey=api_key, plan=plan)


@router.post(
    "/v1/chat",
    response_model=ChatResponse,
    responses=_errors(400, 401, 403, 429, 503, 504),
)
async def chat(
    body: ChatRequest,
    user: CurrentUser,
    settings: SettingsDep,
    limiter: LimiterDep,
    usage: UsageClientDep,
    ai: AiClientDep,
    request_id: RequestIdDep,
) -> ChatResponse:
    """Send a prompt to the model. The quota is reserved before the model runs (403 if short)."""
    turn = ChatTurn(settings, usage, ai, user, request_id, time.perf_counter())
    if len(body.prompt) > settings.max_prompt_chars:
        raise BadRequestError(
            f"Prompt is too long (at most {settings.max_prompt_chars} characters)",
            code="prompt_too_long",
        )
    try:
        await check_rate_limit(limiter, settings, user)
    except RateLimitedError:
        await turn.log_rate_limited()
        raise
    return await turn.run(body.prompt)


@router.get("/v1/usage", response_model=UsageSummary, responses=_errors(401, 503, 504))
async def usage(user: CurrentUser, usage: UsageClientDep) -> UsageSummary:
    """This calendar month's (UTC) token usage and quota."""
    monthly = await usage.monthly(user)
    limit = monthly.monthlyTokenLimit
    return UsageSummary(
        usedTokens=monthly.usedTokens,
        monthlyLimit=limit,
        remainingTokens=limit - monthly.usedTokens,
        percentageUsed=round(monthly.usedTokens / limit * 100, 2) if limit else 0.0,
    )


@router.get("/test", response_model=AccessGranted, responses=_errors(401, 429, 503))
async def access_test(
    user: CurrentUser, limiter: LimiterDep, settings: SettingsDep
) -> AccessGranted:
    """Check an API key (shares the chat rate limit)."""
    await check_rate_limit(limiter, settings, user)
    return AccessGranted(user=user)
