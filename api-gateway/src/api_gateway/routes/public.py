"""The public InferGate API (reached through nginx): register, chat, usage and the auth test."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import StreamingResponse
from infergate_common.errors import RateLimitedError, error_responses

from api_gateway.admission import (
    admit,
    count_request,
    record_current_usage,
    record_usage,
    show_window,
)
from api_gateway.deps import (
    AuthClientDep,
    CatalogDep,
    ChatTurnDep,
    ClientAddressDep,
    CurrentUser,
    IdempotencyKeyDep,
    LimiterDep,
    RegistrationLimiterDep,
    SettingsDep,
    SettlerDep,
    UsageClientDep,
)
from api_gateway.rate_limit_headers import record_tokens
from api_gateway.schemas import (
    AccessGranted,
    ChatRequest,
    ChatResponse,
    RegisterRequest,
    RegisterResponse,
    UsageSummary,
)
from api_gateway.sse import event_stream, first_event, infergate_events

router = APIRouter(tags=["public"])


@router.post(
    "/v1/register",
    status_code=status.HTTP_201_CREATED,
    response_model=RegisterResponse,
    responses=error_responses(400, 409, 429, 503, 504),
)
async def register(
    body: RegisterRequest,
    auth: AuthClientDep,
    limiter: RegistrationLimiterDep,
    settings: SettingsDep,
    address: ClientAddressDep,
    idempotency_key: IdempotencyKeyDep,
) -> RegisterResponse:
    """Create an account and return its API key (shown once). Limited per client address (an
    IPv6 address per /64). Send an `Idempotency-Key` to be able to repeat the call safely: a
    repeat within 24 hours returns the same answer, the same key included."""
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
    api_key, plan = await auth.register(body.email, idempotency_key=idempotency_key)
    return RegisterResponse(apiKey=api_key, plan=plan)


@router.post(
    "/v1/chat",
    response_model=ChatResponse,
    responses={
        **error_responses(400, 401, 403, 404, 429, 503, 504),
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when streaming"},
    },
)
async def chat(
    request: Request,
    body: ChatRequest,
    turn: ChatTurnDep,
    limiter: LimiterDep,
    catalog: CatalogDep,
) -> ChatResponse | StreamingResponse:
    """Send a prompt to the model. Tokens are reserved before it runs (403 if the month is short).

    With `"stream": true` the answer is Server-Sent Events: `{"type":"delta","output":...}` per
    chunk, then `{"type":"done","tokensUsed":...}` (or an `error` event)."""
    call = turn.model_call(
        [{"role": "user", "content": body.prompt}], model=catalog.resolve(body.model)
    )
    admitted = await admit(request, turn=turn, call=call, limiter=limiter, early=not body.stream)
    if body.stream:
        events = await first_event(turn.stream(admitted))
        return event_stream(infergate_events(events))
    finished = await turn.complete(admitted)
    record_tokens(request.scope, finished.tokens)
    return ChatResponse(output=finished.generation.output, tokensUsed=finished.charged)


@router.get("/v1/usage", response_model=UsageSummary, responses=error_responses(401, 503, 504))
async def usage(
    request: Request,
    user: CurrentUser,
    usage: UsageClientDep,
    limiter: LimiterDep,
    settings: SettingsDep,
    settler: SettlerDep,
) -> UsageSummary:
    """This calendar month's (UTC) token usage and quota (your chats answered by now
    included)."""
    await settler.applied_for(user.userId, timeout_s=settings.usage_timeout)
    monthly = await usage.monthly(user)
    record_usage(request, monthly)
    await show_window(request, limiter, settings, user)
    limit = monthly.monthlyTokenLimit
    return UsageSummary(
        usedTokens=monthly.usedTokens,
        monthlyLimit=limit,
        # One definition everywhere (the token headers too): what a new chat can still draw on.
        remainingTokens=max(limit - monthly.usedTokens - monthly.reservedTokens, 0),
        percentageUsed=round(monthly.usedTokens / limit * 100, 2) if limit else 0.0,
    )


@router.get("/test", response_model=AccessGranted, responses=error_responses(401, 429, 503, 504))
async def access_test(
    request: Request,
    user: CurrentUser,
    limiter: LimiterDep,
    settings: SettingsDep,
    usage: UsageClientDep,
) -> AccessGranted:
    """Check an API key (shares the chat rate limit)."""
    await count_request(request, limiter, settings, user)
    await record_current_usage(request, usage, user)
    return AccessGranted(user=user)
