"""What each user's month had left after their last reservation through this gateway.

Only a hint, never a decision: usage-service's reservation is what admits a chat. The hint says
when a plain chat's model call may start while its reservation is being made (see
ChatTurn.reserve): a user with ample room left is almost never refused, so the reservation's round
trip need not come before the model's. A wrong hint (another gateway used the month, a plan was
lowered) costs a model call that is cancelled when the refusal comes, never an answer without a
reservation.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

_MAX_USERS = 100_000


class QuotaRoom:
    """Bounded (the least recently seen user drops out first); entries expire after `max_age_s`."""

    def __init__(
        self,
        *,
        max_age_s: float,
        max_users: int = _MAX_USERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_age_s = max_age_s
        self._max_users = max_users
        self._clock = clock
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def saw(self, user_id: str, remaining: int) -> None:
        """A reservation left the user's month with `remaining` tokens."""
        self._seen[user_id] = (remaining, self._clock())
        self._seen.move_to_end(user_id)
        if len(self._seen) > self._max_users:
            self._seen.popitem(last=False)

    def forget(self, user_id: str) -> None:
        self._seen.pop(user_id, None)

    def covers(self, user_id: str, tokens: int) -> bool:
        """The user's month had at least `tokens` left when last seen, recently enough."""
        seen = self._seen.get(user_id)
        if seen is None:
            return False
        remaining, at = seen
        if self._clock() - at > self._max_age_s:
            del self._seen[user_id]
            return False
        return remaining >= tokens
