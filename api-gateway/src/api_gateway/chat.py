"""One chat turn: reserve the worst case, call the model, settle the actual count.

Used by the InferGate chat route and the OpenAI-compatible route alike; they differ only in how
they format what `complete` returns or what `stream` yields.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import anyio
import structlog
from infergate_common.errors import AppError, UpstreamTimeoutError, UpstreamUnavailableError

from api_gateway.circuit_breaker import CircuitBreaker
from api_gateway.clients import AiClient, UsageClient
from api_gateway.config import Settings
from api_gateway.rate_limit_headers import TokenBudget
from api_gateway.schemas import Generation, ModelCall, Reservation, VerifiedUser

_log = structlog.get_logger("chat")
_SETTLE_ATTEMPTS = 3
_TOKENS_PER_MESSAGE = 8  # role markers around each message in a chat template


def worst_case_tokens(call: ModelCall, *, overhead: int) -> int:
    """An upper bound of prompt + completion tokens: no BPE token is shorter than one byte."""
    framing = overhead + _TOKENS_PER_MESSAGE * (len(call.messages) - 1)
    return call.prompt_bytes() + framing + call.max_tokens


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    generation: Generation
    charged: int
    tokens: TokenBudget | None  # the month's quota after this turn, for the headers


@dataclass(frozen=True)
class Failed:
    error: AppError


StreamEvent = Delta | Finished | Failed


@dataclass
class ChatTurn:
    settings: Settings
    usage: UsageClient
    ai: AiClient
    user: VerifiedUser
    request_id: str
    started: float
    breaker: CircuitBreaker

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 2)

    def model_call(
        self,
        messages: list[dict[str, str]],
        *,
        model: str,
        max_tokens: int | None = None,
        **sampling: object,
    ) -> ModelCall:
        """The call to make; the output is capped at MAX_OUTPUT_TOKENS whatever is asked."""
        cap = self.settings.max_output_tokens
        return ModelCall.model_validate(
            {
                "messages": messages,
                "max_tokens": min(max_tokens or cap, cap),
                "model": model,
                **{k: v for k, v in sampling.items() if v is not None},
            }
        )

    async def log_rate_limited(self, model: str) -> None:
        try:
            await self.usage.log_attempt(
                {
                    "requestId": self.request_id,
                    "userId": self.user.userId,
                    "status": "RATE_LIMITED",
                    "model": model,
                    "responseTimeMs": self.elapsed_ms(),
                }
            )
        except AppError as exc:
            _log.warning("attempt_log_failed", code=exc.error_code)

    async def reserve(self, call: ModelCall) -> Reservation:
        """Hold the worst case before the model runs (403 when the month cannot cover it).

        An open circuit refuses first (503), so nothing is reserved for a failing model."""
        self.breaker.before_call()
        try:
            return await self.usage.reserve(
                request_id=self.request_id,
                user=self.user,
                tokens=worst_case_tokens(call, overhead=self.settings.prompt_token_overhead),
                model=call.model,
            )
        except BaseException:
            self.breaker.record_abandoned()
            raise

    async def complete(self, call: ModelCall, reservation: Reservation) -> Finished:
        try:
            generation = await self.ai.generate(call)
        except AppError as exc:
            self._judge(exc)
            await self._release(call, reservation, exc)
            raise
        except BaseException:
            self.breaker.record_abandoned()
            raise
        self.breaker.record_success()
        charged, usage = await self._settle(reservation, generation, "SUCCESS")
        return Finished(generation, charged, usage)

    def _judge(self, error: AppError | None) -> None:
        """Tell the breaker how the model call ended (4xx and cancellations do not count)."""
        if error is None:
            self.breaker.record_success()
        elif error.status_code >= 500:
            self.breaker.record_failure()
        else:
            self.breaker.record_abandoned()

    async def stream(
        self, call: ModelCall, reservation: Reservation
    ) -> AsyncGenerator[StreamEvent, None]:
        """Relay the model's chunks; settle from its final counts, or from what was sent."""
        chunks = 0
        outcome: StreamEvent | None = None
        try:
            async with self.ai.stream(call) as events:
                async for event in events:
                    kind = event.get("type")
                    if kind == "delta":
                        chunks += 1
                        yield Delta(str(event["content"]))
                    elif kind == "done":
                        generation = Generation.model_validate({**event, "output": ""})
                        charged, usage = await self._settle(reservation, generation, "SUCCESS")
                        outcome = Finished(generation, charged, usage)
                    else:
                        outcome = Failed(_stream_error(event))
                        break
        except AppError as exc:
            outcome = Failed(exc)
        finally:
            if isinstance(outcome, Failed):
                self._judge(outcome.error)
            elif isinstance(outcome, Finished):
                self._judge(None)
            else:
                self.breaker.record_abandoned()
            if outcome is None or isinstance(outcome, Failed):
                # Failed, cut off, or the client went away: charge what was generated.
                with anyio.CancelScope(shield=True):
                    await self._settle_partial(call, reservation, chunks, outcome)
        if outcome is not None:
            yield outcome

    async def _release(self, call: ModelCall, reservation: Reservation, exc: AppError) -> None:
        status = "TIMEOUT" if isinstance(exc, UpstreamTimeoutError) else "UPSTREAM_ERROR"
        with anyio.CancelScope(shield=True):
            await self._settle(reservation, _nothing(call.model), status)

    async def _settle_partial(
        self, call: ModelCall, reservation: Reservation, chunks: int, outcome: StreamEvent | None
    ) -> None:
        error = outcome.error if isinstance(outcome, Failed) else None
        if outcome is None:
            status = "CANCELLED"
        else:
            status = "TIMEOUT" if isinstance(error, UpstreamTimeoutError) else "UPSTREAM_ERROR"
        if chunks == 0:
            await self._settle(reservation, _nothing(call.model), status)
            return
        # Ollama reports counts only at the end: one chunk is one token, and the prompt is
        # estimated at four bytes a token.
        generation = _nothing(call.model)
        generation.promptTokens = math.ceil(call.prompt_bytes() / 4)
        generation.completionTokens = chunks
        await self._settle(reservation, generation, status)

    async def _settle(
        self, reservation: Reservation, generation: Generation, status: str
    ) -> tuple[int, TokenBudget | None]:
        """Settle (or release) the reservation; retried, since settling twice is a no-op."""
        charged = min(
            generation.promptTokens + generation.completionTokens, reservation.reservedTokens
        )
        payload: dict[str, object] = {
            "reservationId": reservation.reservationId,
            "requestId": self.request_id,
            "userId": self.user.userId,
            "period": reservation.period,
            "reservedTokens": reservation.reservedTokens,
            "promptTokens": generation.promptTokens,
            "completionTokens": generation.completionTokens,
            "status": status,
            "model": generation.model,
            "responseTimeMs": self.elapsed_ms(),
        }
        for attempt in range(1, _SETTLE_ATTEMPTS + 1):
            try:
                await self.usage.settle(payload)
                # What reserve saw, plus what this settle gave back (no extra read).
                remaining = reservation.remainingTokens + reservation.reservedTokens - charged
                return charged, TokenBudget(reservation.monthlyTokenLimit, remaining)
            except AppError as exc:
                _log.warning("settle_failed", attempt=attempt, code=exc.error_code)
                await anyio.sleep(0.2 * attempt)
        # The reservation expires and is released by the usage-service's sweeper.
        _log.error("settle_abandoned", reservation_id=reservation.reservationId)
        return charged, None


def _nothing(model: str) -> Generation:
    return Generation(
        output="", tokens=0, promptTokens=0, completionTokens=0, model=model, doneReason="error"
    )


def _stream_error(event: dict[str, object]) -> AppError:
    message = str(event.get("message") or "The LLM stream failed")
    code = str(event.get("code") or "llm_error")
    if event.get("status") == 504:
        return UpstreamTimeoutError(message, code=code)
    return UpstreamUnavailableError(message, code=code)
