"""The billing contract between the gateway and usage-service: reservations and settlements.

A chat is billed in two steps. A *reservation* holds the chat's worst case of the month's quota
before the model runs; a *settlement* turns it into the tokens actually charged, or releases it.
The gateway names each reservation (`reservationId`), so both steps are idempotent: the same
reservation is never held twice, and a settlement is applied to the ledger at most once, whichever
gateway replica delivers it and however often it is delivered.

A chat belongs to the month (UTC) in which the gateway started it (`startedAt`): a chat started
on 31 January and settled on 1 February is January's, in the ledger and in the request log.

One owner for the wire shapes both sides use: snake_case in Python, camelCase on the wire.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict, model_validator
from pydantic.alias_generators import to_camel

from infergate_common.validation import Plan, RequestId, UserId

ReservationId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Model = Annotated[str, Field(min_length=1, max_length=200)]
# Strict: a count is a JSON integer, never a string, a float or a boolean that lax mode coerces.
TokenCount = Annotated[int, Strict(), Field(ge=0, le=10_000_000)]
ReservedTokens = Annotated[int, Strict(), Field(ge=1, le=10_000_000)]
Millis = Annotated[float, Strict(), Field(ge=0, le=86_400_000)]
HoldSeconds = Annotated[int, Strict(), Field(ge=1, le=86_400)]
# The model backend that answered (ai-service's name for it, from its configuration).
Backend = Annotated[str, Field(min_length=1, max_length=100)]


class RequestStatus(StrEnum):
    """How a chat attempt ended, as the request log records it."""

    SUCCESS = "SUCCESS"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    RATE_LIMITED = "RATE_LIMITED"
    TIMEOUT = "TIMEOUT"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    CANCELLED = "CANCELLED"  # the client went away; charged for what was generated
    INTERRUPTED = "INTERRUPTED"  # output was sent, the outcome never learned: charged in full
    EXPIRED = "EXPIRED"  # never settled in time: released (a later settlement still charges)
    CACHED = "CACHED"  # answered from the response cache, without calling the model


def period_of(moment: datetime) -> str:
    """The quota period containing `moment`: "YYYY-MM" in UTC."""
    moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def wire(self) -> dict[str, object]:
        """The JSON-ready body, with the wire's (camelCase) names."""
        return self.model_dump(mode="json", by_alias=True)


class ReservationRequest(WireModel):
    """Hold up to `tokens` (the chat's worst case), at least `min_tokens` (its prompt's bound and
    one token of output): a month that cannot cover the worst case gives what it has left."""

    reservation_id: ReservationId
    request_id: RequestId
    user_id: UserId
    plan: Plan
    tokens: ReservedTokens
    min_tokens: ReservedTokens
    hold_seconds: HoldSeconds
    model: Model
    started_at: AwareDatetime

    @model_validator(mode="after")
    def _minimum_within_worst_case(self) -> Self:
        if self.min_tokens > self.tokens:
            raise ValueError("minTokens must not exceed tokens")
        return self

    @property
    def period(self) -> str:
        return period_of(self.started_at)


class Reservation(WireModel):
    """What was held: `reserved_tokens` may be less than asked (never less than the minimum)."""

    reservation_id: str
    reserved_tokens: int
    monthly_token_limit: int
    remaining_tokens: int


class Settlement(WireModel):
    """The outcome of one reservation: charge the tokens used (never more than reserved), or
    release it (no tokens)."""

    reservation_id: ReservationId
    request_id: RequestId
    user_id: UserId
    plan: Plan  # the user's plan when the chat started (a month opened by a release uses it)
    reserved_tokens: ReservedTokens
    prompt_tokens: TokenCount = 0
    completion_tokens: TokenCount = 0
    status: RequestStatus
    model: Model
    response_time_ms: Millis
    started_at: AwareDatetime
    backend: Backend | None = None

    @property
    def period(self) -> str:
        return period_of(self.started_at)

    @property
    def charged_tokens(self) -> int:
        return min(self.prompt_tokens + self.completion_tokens, self.reserved_tokens)


class AttemptLog(WireModel):
    """A chat attempt that never reached a reservation, for the request log: rate limited, or
    answered from the response cache free of charge (with the counts of the answer it
    repeated)."""

    request_id: RequestId
    user_id: UserId
    status: RequestStatus
    model: Model
    response_time_ms: Millis
    started_at: AwareDatetime
    prompt_tokens: TokenCount = 0
    completion_tokens: TokenCount = 0


class SettlementOutcome(StrEnum):
    SETTLED = "settled"  # the open reservation was closed with this charge
    LATE = "late"  # it had been released as expired; the charge is applied now
    REPEATED = "repeated"  # already settled: nothing changed
    VOIDED = "voided"  # a release of a reservation never made: its id can no longer be held


class SettlementResult(WireModel):
    reservation_id: str
    outcome: SettlementOutcome
    charged_tokens: int


class SettlementBatch(WireModel):
    settlements: Annotated[list[Settlement], Field(min_length=1, max_length=500)]


class SettlementResults(WireModel):
    results: list[SettlementResult]
