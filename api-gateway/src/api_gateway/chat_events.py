"""What a chat turn produces: its admission, and the events of its answer (a chunk of text, the
end with what was charged, or a failure)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from infergate_common.billing import Reservation, Settlement
from infergate_common.errors import AppError

from api_gateway.rate_limit_headers import TokenBudget
from api_gateway.response_cache import CachedAnswer, CacheEntry
from api_gateway.schemas import Generation, ModelCall
from api_gateway.telemetry import ModelTime


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
class EarlyCall:
    """A model call started while its reservation was being made (see ChatTurn.reserve)."""

    task: asyncio.Task[Generation]
    model_time: ModelTime = field(default_factory=ModelTime)  # its own, until it is used

    def abandon(self) -> None:
        """Cancel it (the reservation was refused, or capped the output below its call's)."""
        self.task.cancel()


@dataclass(frozen=True)
class Admitted:
    """A chat allowed to run: its call (output capped to what was reserved) and reservation."""

    call: ModelCall
    reservation: Reservation
    cache_entry: CacheEntry | None = None  # where the answer is kept (None: not cached)
    hit: CachedAnswer | None = None  # the kept answer that answers it (no model call)
    early: EarlyCall | None = None  # its model call, already started


def budget_after(reservation: Reservation, settlement: Settlement) -> TokenBudget:
    """The month after a turn: what its reservation saw, plus what the settlement gave back."""
    returned = reservation.reserved_tokens - settlement.charged_tokens
    return TokenBudget(reservation.monthly_token_limit, reservation.remaining_tokens + returned)
