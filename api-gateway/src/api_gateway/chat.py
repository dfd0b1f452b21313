"""One chat turn: reserve the worst case, call the model, settle what it used.

Used by the InferGate chat route and the OpenAI-compatible route alike; they differ only in how
they format what `complete` returns or what `stream` yields.

What a chat is charged (never more than its reservation): the model's own counts when it reports
them; for a count it leaves out, the prompt's upper bound and, for output, the chunks sent (or
the output cap). A stream that is cut (the client left, the model failed) is charged the prompt's
bound plus the chunks sent; one that sent nothing is released.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from infergate_common.billing import RequestStatus, Reservation, ReservationRequest, Settlement
from infergate_common.errors import AppError, UpstreamTimeoutError, UpstreamUnavailableError

from api_gateway.billing import Billing
from api_gateway.circuit_breaker import CircuitBreaker, CircuitBreakers
from api_gateway.clients import AiClient, UsageClient
from api_gateway.config import Settings
from api_gateway.rate_limit_headers import TokenBudget
from api_gateway.schemas import Generation, ModelCall, VerifiedUser
from api_gateway.telemetry import GatewayTelemetry, ModelTime

_log = structlog.get_logger("chat")
WallClock = Callable[[], datetime]


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    generation: Generation
    settlement: Settlement  # what was charged, and the counts it was charged for
    tokens: TokenBudget  # the month's quota after this turn, for the headers

    @property
    def charged(self) -> int:
        return self.settlement.charged_tokens


@dataclass(frozen=True)
class Failed:
    error: AppError
    settlement: Settlement | None = None  # what a stream cut by the failure was charged


StreamEvent = Delta | Finished | Failed


@dataclass(frozen=True)
class Admitted:
    """A chat allowed to run: its call (output capped to what was reserved) and reservation."""

    call: ModelCall
    reservation: Reservation


@dataclass
class ChatTurn:
    settings: Settings
    usage: UsageClient
    ai: AiClient
    billing: Billing
    breakers: CircuitBreakers  # one per model
    user: VerifiedUser
    request_id: str
    started: float  # perf_counter, for the response time
    started_at: datetime  # wall clock: the chat's month, and its time in the request log
    telemetry: GatewayTelemetry
    model_time: ModelTime  # how long the model took (for the gateway's added latency)

    @classmethod
    def now(cls, wall_clock: WallClock = lambda: datetime.now(UTC)) -> tuple[float, datetime]:
        return time.perf_counter(), wall_clock()

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
                "prompt_overhead": self.settings.prompt_token_overhead,
                **{k: v for k, v in sampling.items() if v is not None},
            }
        )

    async def log_rate_limited(self, model: str) -> None:
        try:
            await self.usage.log_attempt(
                request_id=self.request_id,
                user_id=self.user.userId,
                model=model,
                response_time_ms=self.elapsed_ms(),
                started_at=self.started_at,
            )
        except AppError as exc:
            _log.warning("attempt_log_failed", code=exc.error_code)

    async def reserve(self, call: ModelCall) -> Admitted:
        """Hold the worst case, or what is left if it covers the prompt's bound and some output
        (the output is then capped to fit); 403 when not even that is left. An open circuit
        refuses first (503), so nothing is reserved for a failing model."""
        breaker = self.breakers.for_model(call.model)
        breaker.before_call()
        request = ReservationRequest(
            reservation_id=uuid.uuid4().hex,
            request_id=self.request_id,
            user_id=self.user.userId,
            plan=self.user.plan,
            tokens=call.worst_case(),
            min_tokens=call.prompt_bound() + 1,
            hold_seconds=self.settings.chat_deadline_seconds,
            model=call.model,
            started_at=self.started_at,
        )
        try:
            reservation = await self.billing.reserve(request)
        except BaseException:
            breaker.record_abandoned()
            raise
        output_cap = reservation.reserved_tokens - call.prompt_bound()
        return Admitted(call.model_copy(update={"max_tokens": output_cap}), reservation)

    async def complete(self, admitted: Admitted) -> Finished:
        call, reservation = admitted.call, admitted.reservation
        breaker = self.breakers.for_model(call.model)
        observed = self.telemetry.model_call(call, self.model_time)
        try:
            with observed:
                generation = await self.ai.generate(call)
                observed.answered(generation)
        except AppError as exc:
            _judge(breaker, exc)
            await self.billing.settle_shielded(
                self._settlement(admitted, _status(exc)), required=False
            )
            raise
        except BaseException:  # cancelled: release in the background, and go
            breaker.record_abandoned()
            self.billing.settle_later(self._settlement(admitted, RequestStatus.CANCELLED))
            raise
        breaker.record_success()
        # A missing output count with output: the cap stands in for it (never billed as 0).
        output_bound = call.max_tokens if generation.output else 0
        billed = self._settlement(
            admitted,
            RequestStatus.SUCCESS,
            prompt=_known(generation.promptTokens, call.prompt_bound()),
            completion=_known(generation.completionTokens, output_bound),
        )
        settlement = await self.billing.settle_shielded(billed, required=True)
        return Finished(generation, settlement, self._budget(reservation, settlement))

    async def stream(self, admitted: Admitted) -> AsyncGenerator[StreamEvent, None]:
        """Relay the model's chunks, then its end: settled before the final event is sent."""
        call, reservation = admitted.call, admitted.reservation
        in_full = self._settlement(
            admitted,
            RequestStatus.INTERRUPTED,
            prompt=call.prompt_bound(),
            completion=reservation.reserved_tokens - call.prompt_bound(),
        )
        sent, marked = 0, False
        ending: Generation | AppError | None = None  # None: cut off (the client went away)
        observed = self.telemetry.model_call(call, self.model_time, streamed=True)
        try:
            async with self.ai.stream(call) as events:
                async for event in events:
                    kind = event.get("type")
                    if kind == "delta":
                        if sent == 0:
                            observed.first_output()
                            marked = await self.billing.mark_output(in_full)
                        sent += 1
                        yield Delta(str(event["content"]))
                    elif kind == "done":
                        ending = Generation.model_validate({**event, "output": ""})
                        break
                    else:
                        ending = _stream_error(event)
                        break
        except AppError as exc:
            ending = exc
        finally:
            observed.ended(ending, sent)
            _judge(self.breakers.for_model(call.model), ending)
            settlement = await self.billing.settle_shielded(
                self._stream_settlement(admitted, ending, sent),
                instead_of=in_full if marked else None,
                required=False,
            )
        if isinstance(ending, Generation):
            yield Finished(ending, settlement, self._budget(reservation, settlement))
        elif isinstance(ending, AppError):
            yield Failed(ending, settlement)

    def _stream_settlement(
        self, admitted: Admitted, ending: Generation | AppError | None, sent: int
    ) -> Settlement:
        bound = admitted.call.prompt_bound()
        if isinstance(ending, Generation):
            return self._settlement(
                admitted,
                RequestStatus.SUCCESS,
                prompt=_known(ending.promptTokens, bound),
                completion=_known(ending.completionTokens, sent),
            )
        status = RequestStatus.CANCELLED if ending is None else _status(ending)
        if sent == 0:
            return self._settlement(admitted, status)
        return self._settlement(admitted, status, prompt=bound, completion=sent)

    def _settlement(
        self,
        admitted: Admitted,
        status: RequestStatus,
        *,
        prompt: int = 0,
        completion: int = 0,
    ) -> Settlement:
        reservation = admitted.reservation
        return Settlement(
            reservation_id=reservation.reservation_id,
            request_id=self.request_id,
            user_id=self.user.userId,
            plan=self.user.plan,
            reserved_tokens=reservation.reserved_tokens,
            prompt_tokens=prompt,
            completion_tokens=completion,
            status=status,
            model=admitted.call.model,
            response_time_ms=self.elapsed_ms(),
            started_at=self.started_at,
        )

    @staticmethod
    def _budget(reservation: Reservation, settlement: Settlement) -> TokenBudget:
        """The month after this turn: what reserve saw, plus what the settlement gave back."""
        returned = reservation.reserved_tokens - settlement.charged_tokens
        return TokenBudget(reservation.monthly_token_limit, reservation.remaining_tokens + returned)


def _judge(breaker: CircuitBreaker, ending: Generation | AppError | None) -> None:
    """Tell the model's breaker how its call ended: a 5xx or timeout counts against it; an
    answer for it; a 4xx (a model the server lacks) or a caller who left, neither."""
    if isinstance(ending, Generation):
        breaker.record_success()
    elif isinstance(ending, AppError) and ending.status_code >= 500:
        breaker.record_failure()
    else:
        breaker.record_abandoned()


def _known(count: int | None, otherwise: int) -> int:
    """A count the model reported, or the bound that stands in for it."""
    return otherwise if count is None else count


def _status(error: AppError) -> RequestStatus:
    if isinstance(error, UpstreamTimeoutError):
        return RequestStatus.TIMEOUT
    return RequestStatus.UPSTREAM_ERROR


def _stream_error(event: dict[str, object]) -> AppError:
    message = str(event.get("message") or "The LLM stream failed")
    code = str(event.get("code") or "llm_error")
    if event.get("status") == 504:
        return UpstreamTimeoutError(message, code=code)
    return UpstreamUnavailableError(message, code=code)
