"""An in-process cache of verified API keys, so a key does not cost a call to auth-service (and
a MongoDB read) on every request.

Each entry holds the user's `version` as auth-service reported it (it counts the user's key and
plan changes); the gateway uses an entry only while the latest version announced in Redis is not
newer (see `key_versions`), so a rotation, revocation or plan change made through any replica
applies on every replica from the next request. Entries are keyed by the key's SHA-256 (the key
itself is never kept) and are also dropped KEY_CACHE_SECONDS after their verification *started*:
that bounds how long a change whose announcement was lost (Redis unreachable right then) can be
missed. Only successful verifications are cached, so a new key works at once and unknown keys
cannot fill the cache. The replica that rotates or revokes a key drops it at once and refuses
verifications of it that started before (they may have read the old state).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from api_gateway.schemas import VerifiedUser

DEFAULT_MAX_ENTRIES = 100_000  # about 30 MB when full


@dataclass(frozen=True, slots=True)
class CachedKey:
    user: VerifiedUser
    version: int  # the user's version the verification saw


def _digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class VerifiedKeyCache:
    """Bounded (least recently stored go first) and single-threaded: used from the event loop."""

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CachedKey]] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}  # user id -> digests of their cached keys
        # digest -> when it was invalidated: verifications that started earlier are not stored.
        self._invalidated: OrderedDict[str, float] = OrderedDict()

    def now(self) -> float:
        """The clock `put`'s `verified_at` is read from."""
        return self._clock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, api_key: str) -> CachedKey | None:
        if self.ttl <= 0:
            return None
        digest = _digest(api_key)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        expires, cached = entry
        if expires <= self._clock():
            self._drop(digest)
            return None
        return cached

    def put(self, api_key: str, cached: CachedKey, *, verified_at: float) -> None:
        """Keep a verification that started at `verified_at` (`now()` read before the call)."""
        now = self._clock()
        expires = verified_at + self.ttl
        if expires <= now:
            return
        digest = _digest(api_key)
        self._forget_old_invalidations(now)
        invalidated = self._invalidated.get(digest)
        if invalidated is not None and verified_at <= invalidated:
            return
        self._drop(digest)
        self._entries[digest] = (expires, cached)
        self._by_user.setdefault(cached.user.userId, set()).add(digest)
        while len(self._entries) > self._max:
            self._drop(next(iter(self._entries)))

    def invalidate(self, api_key: str) -> None:
        """Forget this key now (after rotating or revoking it)."""
        digest = _digest(api_key)
        self._drop(digest)
        if self.ttl <= 0:
            return
        self._invalidated[digest] = self._clock()
        self._invalidated.move_to_end(digest)
        while len(self._invalidated) > self._max:
            self._invalidated.popitem(last=False)

    def invalidate_user(self, user_id: str, *, below: int | None = None) -> None:
        """Forget the user's keys (after a plan change, so the new plan applies at once), or
        only those verified before version `below` (a change seen in auth-service's feed)."""
        for digest in list(self._by_user.get(user_id, ())):
            entry = self._entries.get(digest)
            if entry is not None and (below is None or entry[1].version < below):
                self._drop(digest)

    def _drop(self, digest: str) -> None:
        entry = self._entries.pop(digest, None)
        if entry is None:
            return
        user_id = entry[1].user.userId
        digests = self._by_user.get(user_id)
        if digests is not None:
            digests.discard(digest)
            if not digests:
                del self._by_user[user_id]

    def _forget_old_invalidations(self, now: float) -> None:
        # Past one TTL an invalidation no longer matters: older verifications have expired.
        while self._invalidated:
            digest, at = next(iter(self._invalidated.items()))
            if at + self.ttl > now:
                break
            del self._invalidated[digest]
