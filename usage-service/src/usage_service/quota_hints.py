"""The month figures this usage-service process last saw, per user and month.

A reservation is a compare-and-set on these figures: when they still hold, the result is known
without reading the document back (one round trip instead of two). A stale hint (another replica,
an admin change, a concurrent request) costs a refused update, never a wrong answer.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

_MAX_HINTS = 100_000


@dataclass(frozen=True, slots=True)
class Quota:
    """A month's limit and what is left of it."""

    limit: int
    remaining: int


class QuotaHints:
    """Bounded: the least recently used month drops out first."""

    def __init__(self, max_entries: int = _MAX_HINTS) -> None:
        self._max = max_entries
        self._hints: OrderedDict[str, Quota] = OrderedDict()

    def get(self, key: str) -> Quota | None:
        return self._hints.get(key)

    def put(self, key: str, quota: Quota) -> Quota:
        self._hints[key] = quota
        self._hints.move_to_end(key)
        if len(self._hints) > self._max:
            self._hints.popitem(last=False)
        return quota

    def shift(self, key: str, returned: int) -> None:
        """A settlement gave `returned` tokens back to the month (negative: took more)."""
        hint = self._hints.get(key)
        if hint is not None:
            self._hints[key] = Quota(hint.limit, hint.remaining + returned)

    def forget(self, key: str) -> None:
        self._hints.pop(key, None)
