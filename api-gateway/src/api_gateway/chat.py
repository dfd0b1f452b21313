"""One chat turn: reserve the worst case, call the model, settle what it used.

Used by the InferGate chat route and the OpenAI-compatible route alike; they differ only in how
they format what `complete` returns or what `stream` yields.

What a chat is charged (never more than its reservation): the model's own counts when it reports
them; for a count it leaves out, the prompt's upper bound and, for output, the chunks sent (or
the output cap). A stream that is cut (the client left, the model failed) is charged the prompt's
bound plus the chunks sent; one that sent nothing is released.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from infergate_common.billing import RequestStatus, ReservationRequest, Settlement
from infergate_common.circuit_breaker import CircuitBreaker
from infergate_common.errors import AppError, UpstreamTimeoutError, UpstreamUnavailableError

from api_gateway.billing import Billing
from api_gateway.chat_cache import admit_hit, finish_hit, replay_hit
from api_gateway.chat_events import (
    Admitted,
    Delta,
    EarlyCall,
    Failed,
    Finished,
    StreamEvent,
    budget_after,
)
from api_gateway.circuit_breaker import CircuitBreakers
from api_gateway.clients import AiClient, UsageClient
from api_gateway.config import Settings
from api_gateway.key_lifecycle import Unconfirmed
from api_gateway.response_cache import CachedAnswer, ResponseCache
from api_gateway.schemas import Generation, ModelCall, VerifiedUser
from api_gateway.telemetry import GatewayTelemetry, ModelTime

_log = structlog.get_logger("chat")
WallClock = Callable[[], datetime]


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
    cache: ResponseCache | None = None
    cache_control: str = ""  # the request's Cache-Control (no-cache, no-store)
    # A cached key verification whose version check the rate-limit count makes (admission).
    unconfirmed: Unconfirmed | None = None

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

    async def reserve(self, call: ModelCall, *, early: bool = False) -> Admitted:
        """Hold the worst case, or what is left if it covers the prompt's bound and some output
        (the output is then capped to fit); 403 when not even that is left. An open circuit
        refuses first (503), so nothing is reserved for a failing model. A request the response
        cache answers is admitted as a hit (see chat_cache), whatever the circuit's state.

        `early` (a plain answer, EARLY_MODEL_CALL): when the user's month had ample room at their
        last reservation (quota_room), the model call starts now, while the reservation is being
        made, and is cancelled if the reservation is refused or caps the output below the call's;
        its answer is used only once the reservation is granted (see `complete`). A user without
        that room first has their settlements still lingering in this gateway applied, so what
        their last chat left is what this one can reserve (see Billing.reserve)."""
        entry = None
        if self.cache is not None:
            entry = self.cache.entry(
                call, user_id=self.user.userId, cache_control=self.cache_control
            )
            hit = await self.cache.get(entry) if entry is not None else None
            if entry is not None and hit is not None:
                return await admit_hit(self, call, entry, hit)
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
        settings = self.settings
        room = self.billing.room.covers(
            request.user_id, request.tokens * settings.early_model_call_margin
        )
        started = None
        if early and room and settings.early_model_call:
            started = self._start_early(call)
        try:
            reservation = await self.billing.reserve(
                request, room=room, timeout_s=settings.usage_timeout
            )
        except BaseException:
            breaker.record_abandoned()
            if started is not None:
                started.abandon()
            raise
        output_cap = reservation.reserved_tokens - call.prompt_bound()
        if output_cap != call.max_tokens:
            entry = None  # an answer cut short by the quota is not the request's answer
            if started is not None:  # asked for more output than was reserved: asked again
                started.abandon()
                started = None
        return Admitted(
            call.model_copy(update={"max_tokens": output_cap}),
            reservation,
            cache_entry=entry,
            early=started,
        )

    def _start_early(self, call: ModelCall) -> EarlyCall:
        model_time = ModelTime()
        task = asyncio.create_task(self._generate(call, model_time))
        task.add_done_callback(_retrieved)
        return EarlyCall(task, model_time)

    async def _generate(self, call: ModelCall, model_time: ModelTime) -> Generation:
        observed = self.telemetry.model_call(call, model_time)
        with observed:
            generation = await self.ai.generate(call)
            observed.answered(generation)
        return generation

    async def complete(self, admitted: Admitted) -> Finished:
        if admitted.hit is not None:
            return await finish_hit(self, admitted)
        call, reservation = admitted.call, admitted.reservation
        breaker = self.breakers.for_model(call.model)
        early = admitted.early
        try:
            if early is None:
                generation = await self._generate(call, self.model_time)
            else:
                try:
                    generation = await early.task  # cancelled with this request
                finally:
                    self.model_time.seconds = early.model_time.seconds
        except AppError as exc:
            _judge(breaker, exc)
            await self.billing.settle_shielded(
                self.settlement(admitted, _status(exc)), required=False
            )
            raise
        except BaseException:  # cancelled: release in the background, and go
            breaker.record_abandoned()
            self.billing.settle_later(self.settlement(admitted, RequestStatus.CANCELLED))
            raise
        breaker.record_success()
        # A missing output count with output: the cap stands in for it (never billed as 0).
        output_bound = call.max_tokens if generation.output else 0
        billed = self.settlement(
            admitted,
            RequestStatus.SUCCESS,
            prompt=_known(generation.promptTokens, call.prompt_bound()),
            completion=_known(generation.completionTokens, output_bound),
            backend=generation.backend,
        )
        settlement = await self.billing.settle_shielded(billed, required=True)
        self._remember(admitted, generation, [generation.output])
        return Finished(generation, settlement, budget_after(reservation, settlement))

    def stream(self, admitted: Admitted) -> AsyncGenerator[StreamEvent, None]:
        """Relay the model's chunks, then its end: settled before the final event is sent (or
        replay the cache's)."""
        if admitted.hit is not None:
            return replay_hit(self, admitted)
        return self._relay(admitted)

    async def _relay(self, admitted: Admitted) -> AsyncGenerator[StreamEvent, None]:
        call, reservation = admitted.call, admitted.reservation
        in_full = self.settlement(
            admitted,
            RequestStatus.INTERRUPTED,
            prompt=call.prompt_bound(),
            completion=reservation.reserved_tokens - call.prompt_bound(),
        )
        sent, marked = 0, False
        chunks: list[str] = []  # kept for the response cache
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
                        text = str(event["content"])
                        if admitted.cache_entry is not None:
                            chunks.append(text)
                        yield Delta(text)
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
            self._remember(admitted, ending, chunks)
            yield Finished(ending, settlement, budget_after(reservation, settlement))
        elif isinstance(ending, AppError):
            yield Failed(ending, settlement)

    def _stream_settlement(
        self, admitted: Admitted, ending: Generation | AppError | None, sent: int
    ) -> Settlement:
        bound = admitted.call.prompt_bound()
        if isinstance(ending, Generation):
            return self.settlement(
                admitted,
                RequestStatus.SUCCESS,
                prompt=_known(ending.promptTokens, bound),
                completion=_known(ending.completionTokens, sent),
                backend=ending.backend,
            )
        status = RequestStatus.CANCELLED if ending is None else _status(ending)
        if sent == 0:
            return self.settlement(admitted, status)
        return self.settlement(admitted, status, prompt=bound, completion=sent)

    def settlement(
        self,
        admitted: Admitted,
        status: RequestStatus,
        *,
        prompt: int = 0,
        completion: int = 0,
        backend: str | None = None,
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
            backend=backend,
        )

    def _remember(self, admitted: Admitted, generation: Generation, chunks: list[str]) -> None:
        """Keep a finished answer for the response cache (in the background)."""
        if self.cache is None or admitted.cache_entry is None:
            return
        answer = CachedAnswer.of(generation, chunks)
        if answer is not None:
            self.cache.remember(admitted.cache_entry, answer)


def _retrieved(task: asyncio.Task[Generation]) -> None:
    """An early call's outcome is read by `complete`, or by nobody once abandoned."""
    if not task.cancelled():
        task.exception()


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
