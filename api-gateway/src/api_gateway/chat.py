"""One chat turn: rate limit, reserve the worst case, call the model, settle the actual count."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog
from infergate_common.errors import AppError, RateLimitedError, UpstreamTimeoutError

from api_gateway.clients import AiClient, UsageClient
from api_gateway.config import Settings
from api_gateway.rate_limit import Decision, SlidingWindowLimiter
from api_gateway.schemas import ChatResponse, Generation, Reservation, VerifiedUser

_log = structlog.get_logger("chat")
_SETTLE_ATTEMPTS = 3


def worst_case_tokens(prompt: str, *, max_output: int, overhead: int) -> int:
    """An upper bound of prompt + completion tokens: no BPE token is shorter than one byte."""
    return len(prompt.encode("utf-8")) + overhead + max_output


async def check_rate_limit(
    limiter: SlidingWindowLimiter, settings: Settings, user: VerifiedUser
) -> Decision:
    """Count the request in the user's window; 429 with Retry-After when it is full."""
    decision = await limiter.hit(
        f"rate_limit:{user.userId}",
        limit=settings.rate_limit(user.plan),
        window_s=settings.rate_limit_window,
    )
    if not decision.allowed:
        raise RateLimitedError(headers={"Retry-After": str(decision.retry_after_seconds)})
    return decision


@dataclass
class ChatTurn:
    settings: Settings
    usage: UsageClient
    ai: AiClient
    user: VerifiedUser
    request_id: str
    started: float

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 2)

    async def log_rate_limited(self) -> None:
        try:
            await self.usage.log_attempt(
                {
                    "requestId": self.request_id,
                    "userId": self.user.userId,
                    "status": "RATE_LIMITED",
                    "model": self.settings.model,
                    "responseTimeMs": self.elapsed_ms(),
                }
            )
        except AppError as exc:
            _log.warning("attempt_log_failed", code=exc.error_code)

    async def run(self, prompt: str) -> ChatResponse:
        max_output = self.settings.max_output_tokens
        reservation = await self.usage.reserve(
            request_id=self.request_id,
            user=self.user,
            tokens=worst_case_tokens(
                prompt, max_output=max_output, overhead=self.settings.prompt_token_overhead
            ),
            model=self.settings.model,
        )
        try:
            generation = await self.ai.generate(
                prompt=prompt, max_tokens=max_output, model=self.settings.model
            )
        except AppError as exc:
            status = "TIMEOUT" if isinstance(exc, UpstreamTimeoutError) else "UPSTREAM_ERROR"
            await asyncio.shield(self._settle(reservation, None, status))
            raise
        except asyncio.CancelledError:
            await asyncio.shield(self._settle(reservation, None, "UPSTREAM_ERROR"))
            raise
        charged = await asyncio.shield(self._settle(reservation, generation, "SUCCESS"))
        return ChatResponse(output=generation.output, tokensUsed=charged)

    async def _settle(
        self, reservation: Reservation, generation: Generation | None, status: str
    ) -> int:
        """Settle (or release) the reservation; retried, since settling twice is a no-op."""
        prompt_tokens = generation.promptTokens if generation else 0
        completion_tokens = generation.completionTokens if generation else 0
        charged = min(prompt_tokens + completion_tokens, reservation.reservedTokens)
        payload: dict[str, object] = {
            "reservationId": reservation.reservationId,
            "requestId": self.request_id,
            "userId": self.user.userId,
            "period": reservation.period,
            "reservedTokens": reservation.reservedTokens,
            "promptTokens": prompt_tokens,
            "completionTokens": completion_tokens,
            "status": status,
            "model": generation.model if generation else self.settings.model,
            "responseTimeMs": self.elapsed_ms(),
        }
        for attempt in range(1, _SETTLE_ATTEMPTS + 1):
            try:
                await self.usage.settle(payload)
                return charged
            except AppError as exc:
                _log.warning("settle_failed", attempt=attempt, code=exc.error_code)
                await asyncio.sleep(0.2 * attempt)
        # The reservation expires and is released by the usage-service's sweeper.
        _log.error("settle_abandoned", reservation_id=reservation.reservationId)
        return charged
