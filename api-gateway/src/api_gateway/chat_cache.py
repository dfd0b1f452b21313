"""Chats the response cache answers: admitted, charged and replayed without calling the model.

A hit still counts against the rate limit (it is admitted after it). With CACHE_HIT_CHARGE=full
it is charged the counts of the answer it repeats, through a reservation of exactly those
tokens and its settlement (403 when the month cannot cover them), logged as CACHED. With `none`
(the default) nothing is reserved or charged: the request log gets a CACHED entry with the
counts, and the client is told `tokensUsed: 0`. A streamed hit replays the kept chunks as the
model's own events, settled first (a failure to charge is a plain error, before any event).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import structlog
from infergate_common.billing import RequestStatus, Reservation, ReservationRequest, Settlement
from infergate_common.errors import AppError

from api_gateway.chat_events import Admitted, Delta, Finished, StreamEvent, budget_after
from api_gateway.config import CacheHitCharge
from api_gateway.response_cache import CachedAnswer, CacheEntry
from api_gateway.schemas import ModelCall

if TYPE_CHECKING:
    from api_gateway.chat import ChatTurn

_log = structlog.get_logger("chat_cache")


async def admit_hit(
    turn: ChatTurn, call: ModelCall, entry: CacheEntry, hit: CachedAnswer
) -> Admitted:
    """Reserve exactly what the hit is charged, or (free) only learn the month's figures."""
    counts = hit.prompt_tokens + hit.completion_tokens
    if _charged(turn) and counts > 0:
        request = ReservationRequest(
            reservation_id=uuid.uuid4().hex,
            request_id=turn.request_id,
            user_id=turn.user.userId,
            plan=turn.user.plan,
            tokens=counts,
            min_tokens=counts,
            hold_seconds=turn.settings.chat_deadline_seconds,
            model=call.model,
            started_at=turn.started_at,
        )
        reservation = await turn.billing.reserve(request)
    else:
        month = await turn.usage.monthly(turn.user)
        reservation = Reservation(
            reservation_id=uuid.uuid4().hex,
            reserved_tokens=0,
            monthly_token_limit=month.monthlyTokenLimit,
            remaining_tokens=month.monthlyTokenLimit - month.usedTokens - month.reservedTokens,
        )
    return Admitted(call, reservation, cache_entry=entry, hit=hit)


async def finish_hit(turn: ChatTurn, admitted: Admitted) -> Finished:
    hit = _hit_of(admitted)
    if admitted.reservation.reserved_tokens > 0:
        billed = turn.settlement(
            admitted,
            RequestStatus.CACHED,
            prompt=hit.prompt_tokens,
            completion=hit.completion_tokens,
        )
        settlement = await turn.billing.settle_shielded(billed, required=True)
    else:
        settlement = await _log_free(turn, admitted, hit)
    return Finished(hit.generation(), settlement, budget_after(admitted.reservation, settlement))


async def replay_hit(turn: ChatTurn, admitted: Admitted) -> AsyncGenerator[StreamEvent, None]:
    """The kept chunks as a stream, then its end (charged before the first chunk)."""
    finished = await finish_hit(turn, admitted)
    for chunk in _hit_of(admitted).chunks:
        yield Delta(chunk)
    yield finished


async def _log_free(turn: ChatTurn, admitted: Admitted, hit: CachedAnswer) -> Settlement:
    """Log the free hit with its counts; what the client is told it was charged (nothing)."""
    elapsed = turn.elapsed_ms()
    try:
        await turn.usage.log_attempt(
            request_id=turn.request_id,
            user_id=turn.user.userId,
            model=admitted.call.model,
            response_time_ms=elapsed,
            started_at=turn.started_at,
            status=RequestStatus.CACHED,
            prompt_tokens=hit.prompt_tokens,
            completion_tokens=hit.completion_tokens,
        )
    except AppError as exc:  # the answer costs nothing: a missing log line does not hold it back
        _log.warning("cache_hit_log_failed", code=exc.error_code)
    # Nothing was reserved: a settlement of 0 reserved tokens charges 0 whatever its counts. It
    # never goes on the wire (where a reservation holds at least one token), hence unvalidated.
    return Settlement.model_construct(
        reservation_id=admitted.reservation.reservation_id,
        request_id=turn.request_id,
        user_id=turn.user.userId,
        plan=turn.user.plan,
        reserved_tokens=0,
        prompt_tokens=hit.prompt_tokens,
        completion_tokens=hit.completion_tokens,
        status=RequestStatus.CACHED,
        model=admitted.call.model,
        response_time_ms=elapsed,
        started_at=turn.started_at,
        backend=None,
    )


def _charged(turn: ChatTurn) -> bool:
    return turn.cache is not None and turn.cache.hit_charge is CacheHitCharge.FULL


def _hit_of(admitted: Admitted) -> CachedAnswer:
    if admitted.hit is None:
        raise ValueError("not a cache hit")
    return admitted.hit
