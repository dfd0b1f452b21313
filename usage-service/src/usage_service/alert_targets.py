"""Who is told when a user's month crosses a threshold: the user's own webhook, and the operator's
global one (QUOTA_WEBHOOK_URL). The users' thresholds are cached for a short while, so detection
reads the webhooks collection about once per active user per TTL, not once per settlement; a
change made through this replica applies at once, one made through another within the TTL."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Collection
from typing import Protocol

from usage_service.webhook_events import Target

Thresholds = tuple[int, ...]
TargetThresholds = list[tuple[Target, Thresholds]]
_TTL_S = 30.0
_MAX_CACHED = 100_000


class ThresholdSource(Protocol):
    """What the cache reads: `WebhookConfigs`."""

    async def thresholds_of(self, user_ids: Collection[str]) -> dict[str, Thresholds]: ...


class AlertTargets:
    def __init__(
        self,
        configs: ThresholdSource,
        *,
        global_thresholds: Thresholds | None,
        ttl_s: float = _TTL_S,
    ) -> None:
        self._configs = configs
        self._global = global_thresholds
        self._ttl_s = ttl_s
        self._cache: OrderedDict[str, tuple[float, Thresholds | None]] = OrderedDict()

    @property
    def has_global(self) -> bool:
        return self._global is not None

    async def of(self, user_ids: Collection[str]) -> dict[str, TargetThresholds]:
        """Each user's targets and their thresholds (an empty list: nobody is told)."""
        now = time.monotonic()
        own: dict[str, Thresholds | None] = {}
        for user in user_ids:
            entry = self._cache.get(user)
            if entry is not None and entry[0] >= now:
                own[user] = entry[1]
        stale = [user for user in user_ids if user not in own]
        if stale:
            found = await self._configs.thresholds_of(stale)
            for user in stale:
                own[user] = found.get(user)
                self.changed(user, own[user])
        return {user: self._targets(own[user]) for user in user_ids}

    def changed(self, user_id: str, thresholds: Thresholds | None) -> None:
        """The user's webhook now has these thresholds (None: the user has none)."""
        self._cache[user_id] = (time.monotonic() + self._ttl_s, thresholds)
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
