"""Who is told when a user's month crosses a threshold: the user's own webhook, and the operator's
global one (QUOTA_WEBHOOK_URL). The users' thresholds are cached for a short while, so detection
reads the webhooks collection about once per active user per TTL, not once per settlement; a
change made through this replica applies at once, one made through another within the TTL.

Most users have no webhook, and a user who chats less often than once per TTL would cost a read
per settlement: so the ids of the users who have one are also kept, read all at once at most
once per TTL (while there are at most `max_listed` of them), and a user not among them is known
to have none without a read of their own. The same bound holds: a webhook created through another
replica is seen within the TTL."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Protocol

from usage_service.webhook_events import Target

Thresholds = tuple[int, ...]
TargetThresholds = list[tuple[Target, Thresholds]]
_TTL_S = 30.0
_MAX_CACHED = 100_000
_MAX_LISTED = 100_000  # beyond this many users with a webhook, each is looked up on its own


class ThresholdSource(Protocol):
    """What the cache reads: `WebhookConfigs`."""

    async def thresholds_of(self, user_ids: Collection[str]) -> dict[str, Thresholds]: ...

    async def users_with_webhooks(self, *, limit: int) -> list[str]: ...


class AlertTargets:
    def __init__(
        self,
        configs: ThresholdSource,
        *,
        global_thresholds: Thresholds | None,
        ttl_s: float = _TTL_S,
        max_listed: int = _MAX_LISTED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._configs = configs
        self._clock = clock
        self._global = global_thresholds
        self._ttl_s = ttl_s
        self._cache: OrderedDict[str, tuple[float, Thresholds | None]] = OrderedDict()
        self._max_listed = max_listed
        # The users with a webhook, as read at `_listed_until - ttl` (None: not read, or too many),
        # and the changes made through this replica while a read was under way.
        self._listed: set[str] | None = None
        self._listed_until = 0.0
        self._listing: dict[str, bool] | None = None
        self._reading = asyncio.Lock()

    @property
    def has_global(self) -> bool:
        return self._global is not None

    async def of(self, user_ids: Collection[str]) -> dict[str, TargetThresholds]:
        """Each user's targets and their thresholds (an empty list: nobody is told)."""
        now = self._clock()
        own: dict[str, Thresholds | None] = {}
        for user in user_ids:
            entry = self._cache.get(user)
            if entry is not None and entry[0] >= now:
                own[user] = entry[1]
        stale = [user for user in user_ids if user not in own]
        listed = await self._users_listed(now) if stale else None
        if listed is not None:
            for user in stale:
                if user not in listed:
                    own[user] = None  # no webhook of their own: nothing to read
            stale = [user for user in stale if user not in own]
        if stale:
            found = await self._configs.thresholds_of(stale)
            for user in stale:
                own[user] = found.get(user)
                self._remember(user, own[user])
        return {user: self._targets(own[user]) for user in user_ids}

    def changed(self, user_id: str, thresholds: Thresholds | None) -> None:
        """The user's webhook now has these thresholds (None: the user has none)."""
        self._remember(user_id, thresholds)
        if self._listed is not None:
            if thresholds is None:
                self._listed.discard(user_id)
            else:
                self._listed.add(user_id)
        if self._listing is not None:
            self._listing[user_id] = thresholds is not None

    async def _users_listed(self, now: float) -> set[str] | None:
        """The users with a webhook (None when there are too many to keep), read again once
        the TTL has passed."""
        async with self._reading:
            if now < self._listed_until:
                return self._listed
            self._listing = {}
            try:
                found = await self._configs.users_with_webhooks(limit=self._max_listed + 1)
                changed = self._listing
            finally:
                self._listing = None
            if len(found) > self._max_listed:
                self._listed = None
            else:
                listed = set(found)
                for user, has in changed.items():  # made while the read was under way
                    if has:
                        listed.add(user)
                    else:
                        listed.discard(user)
                self._listed = listed
            self._listed_until = now + self._ttl_s
            return self._listed

    def _remember(self, user_id: str, thresholds: Thresholds | None) -> None:
        self._cache[user_id] = (self._clock() + self._ttl_s, thresholds)
        self._cache.move_to_end(user_id)
        if len(self._cache) > _MAX_CACHED:
            self._cache.popitem(last=False)

    def _targets(self, own: Thresholds | None) -> TargetThresholds:
        targets: TargetThresholds = []
        if own:
            targets.append((Target.USER, own))
        if self._global is not None:
            targets.append((Target.GLOBAL, self._global))
        return targets
