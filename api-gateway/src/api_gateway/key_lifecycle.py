"""API keys at the gateway, in one place: verifying a presented key (the cache, the version check,
failed attempts per client network) and every change of what a key verifies to (rotation,
revocation, an operator's re-issue, a plan change), with how the other replicas learn of it.

How a change reaches every replica, twice over:
* at once: the replica that made it announces the user's new version in Redis, and every replica
  checks a cached verification against it before using it (see key_versions);
* durably: auth-service stamps every change in the user's own document, in the same update, and
  every replica follows those stamps (GET /auth/changes, each KEY_CHANGES_SECONDS) and drops the
  cached verifications they make stale. So a change also reaches a replica when the one that made
  it died before announcing it, when Redis was unreachable, or when Redis came back from an older
  snapshot with a lower version.
A change whose outcome the gateway does not learn (auth-service failed or timed out, the caller
left) marks the key in doubt in Redis, so that no replica trusts a cached verification of it.
The mark lives in the user's hash slot, so the user id is resolved before the change is asked
for: from this replica's cache, else by verifying the key. A key that no longer verifies (a retry
of a rotation that already succeeded) is changed without a user id, and then no mark is possible
if the outcome is unknown: the durable path above still reaches every replica within
KEY_CHANGES_SECONDS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import structlog
from infergate_common.errors import AppError, UnauthorizedError
from infergate_common.validation import is_api_key
from prometheus_client import Counter

from api_gateway.auth_failures import AuthFailures
from api_gateway.clients import AuthClient, UserChange
from api_gateway.key_cache import VerifiedKeyCache
from api_gateway.key_versions import KeyVersions, VersionCheck, version_check
from api_gateway.schemas import IssuedKey, RotatedKey, VerifiedUser

_log = structlog.get_logger("keys")
# Changes are re-read this far back each time: auth-service replicas' clocks may differ a little.
_OVERLAP_MS = 10_000


class Unknown:
    """Not looked up yet (distinct from None: looked up, and the key did not verify)."""


UNKNOWN = Unknown()


def invalid_key() -> UnauthorizedError:
    return UnauthorizedError("Invalid API key", code="invalid_api_key")


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """A cached verification whose version check is still to be made (`KeyLifecycle.cached`):
    `check` is made by the caller in a round trip of its own (a chat's rate-limit count), then
    `confirmed` or `reverify` is called."""

    user: VerifiedUser
    check: VersionCheck
    api_key: str = field(repr=False)
    network: str
    lifecycle: KeyLifecycle = field(repr=False)

    def confirmed(self) -> None:
        """The verification was current."""
        self.lifecycle.count_hit()

    async def reverify(self) -> VerifiedUser:
        """The verification was stale, or its check could not be made: forgotten, and the key
        verified afresh (401 if it no longer verifies)."""
        return await self.lifecycle.verify_afresh(self.api_key, network=self.network)


class KeyLifecycle:
    def __init__(
        self,
        *,
        auth: AuthClient,
        cache: VerifiedKeyCache,
        versions: KeyVersions,
        failures: AuthFailures,
        follow_interval_s: float,
        lookups: Counter,
    ) -> None:
        """`lookups`: infergate_key_cache_lookups_total, by result (hit or miss)."""
        self._auth = auth
        self._hits = lookups.labels("hit")
        self._misses = lookups.labels("miss")
        self._cache = cache
        self._versions = versions
        self._failures = failures
        self._follow_interval_s = follow_interval_s
        self._seen: dict[tuple[str, int], float] = {}  # changes applied, for the overlap

    def cached(self, presented: str, *, network: str) -> Unconfirmed | None:
        """A cached verification of `presented`, its version check not made yet: see
        `Unconfirmed` (None when none is cached)."""
        if not is_api_key(presented):
            return None
        cached = self._cache.get(presented)
        if cached is None:
            return None
        check = version_check(cached.user.userId, cached.version, presented)
        return Unconfirmed(cached.user, check, presented, network, self)

    def count_hit(self) -> None:
        """A cached verification was used (its version checked by the caller)."""
        self._hits.inc()

    async def verify_afresh(self, presented: str, *, network: str) -> VerifiedUser:
        """Forget any cached verification of `presented`, and verify it with auth-service."""
        self._cache.invalidate(presented)
        return await self.verify(presented, network=network)

    async def verify(self, presented: str, *, network: str) -> VerifiedUser:
        """The key's user: a cached verification while no newer version is announced, else
        auth-service's (401 for a key that is not one, 429 for a network that keeps trying)."""
        if not is_api_key(presented):
            await self._failures.failed(network)
            raise invalid_key()
        cached = self._cache.get(presented)
        if cached is not None:
            if await self._versions.is_current(cached.user.userId, cached.version, presented):
                self._hits.inc()
                return cached.user
            # Stale: forgotten now, so a later read of an older version (Redis restored from an
            # earlier snapshot) cannot bring it back after auth-service has refused the key.
            self._cache.invalidate(presented)
        self._misses.inc()
        await self._failures.check(network)
        started = self._cache.now()
        try:
            fresh = await self._auth.verify(presented)
        except UnauthorizedError:
            await self._failures.failed(network)
            raise
        if await self._versions.may_cache(fresh.user.userId, fresh.version, presented):
            self._cache.put(presented, fresh, verified_at=started)
        # else: a newer change was announced meanwhile, the key is in doubt, or Redis is away.
        return fresh.user

    async def rotate(
        self,
        presented: str,
        *,
        idempotency_key: str | None,
        owner: VerifiedUser | None | Unknown = UNKNOWN,
    ) -> RotatedKey:
        """Replace the key (the same new key for a repeat with the same idempotency key).
        `owner`: the key's user if the caller already asked `whose`."""
        user_id = await self._user_id(presented, owner)
        async with self._changing(presented, user_id):
            change, rotated = await self._auth.rotate(presented, idempotency_key=idempotency_key)
        await self.announce(change)
        _log.info("api_key_rotated", user_id=change.user_id)
        return rotated

    async def revoke(
        self, presented: str, *, owner: VerifiedUser | None | Unknown = UNKNOWN
    ) -> None:
        user_id = await self._user_id(presented, owner)
        async with self._changing(presented, user_id):
            change = await self._auth.revoke(presented)
        await self.announce(change)
        _log.info("api_key_revoked", user_id=change.user_id)

    async def issue(self, user_id: str) -> IssuedKey:
        """An operator gives a user a new key (after a loss or a revocation)."""
        change, issued = await self._auth.issue_key(user_id)
        await self.announce(change)
        _log.info("api_key_issued", user_id=user_id)
        return issued

    async def announce(self, change: UserChange) -> None:
        """Make a change known: this replica forgets the user's cached keys, and the version goes
        to Redis for the others. Shielded: a caller leaving now must not keep it from them."""
        self._cache.invalidate_user(change.user_id, below=change.version)
        with anyio.CancelScope(shield=True):
            await self._versions.announce(change.user_id, change.version)

    async def whose(self, presented: str) -> VerifiedUser | None:
        """Whose key is about to change (the id its doubt mark needs, the plan its response
        headers show): this replica's cached verification, else auth-service's. None when the
        key does not verify (a retry of a rotation that succeeded: the change itself decides).
        auth-service's 5xx and timeouts are raised: the change would fail too."""
        if not is_api_key(presented):
            raise invalid_key()
        cached = self._cache.get(presented)
        if cached is not None:
            return cached.user  # a key's user never changes: no version check needed
        try:
            return (await self._auth.verify(presented)).user
        except UnauthorizedError:
            return None

    async def _user_id(self, presented: str, owner: VerifiedUser | None | Unknown) -> str | None:
        if isinstance(owner, Unknown):
            owner = await self.whose(presented)
        return None if owner is None else owner.userId

    @asynccontextmanager
    async def _changing(self, presented: str, user_id: str | None) -> AsyncIterator[None]:
        """Around auth-service's change of a key: this replica forgets the key whatever happens,
        and a change whose outcome is unknown (a 5xx, a timeout, the caller gone) marks the key
        in doubt for as long as any cached verification may live (when its user is known). A 4xx
        changed nothing."""
        try:
            yield
        except BaseException as exc:
            if not (isinstance(exc, AppError) and exc.status_code < 500):
                await self._doubt(presented, user_id)
            raise
        finally:
            self._cache.invalidate(presented)

    async def _doubt(self, presented: str, user_id: str | None) -> None:
        if user_id is None:
            # Nothing to name the mark by; the changes feed reaches every replica instead.
            _log.warning("key_doubt_without_user")
            return
        with anyio.CancelScope(shield=True):
            await self._versions.doubt(user_id, presented, seconds=self._cache.ttl)

    async def follow_changes(self) -> None:
        """Apply auth-service's stamped changes, every interval, for the life of the process."""
        since_ms = int(time.time() * 1000)
        while True:
            await asyncio.sleep(self._follow_interval_s)
            try:
                since_ms = await self.follow_once(since_ms)
            except Exception:  # noqa: BLE001 - revocations must keep arriving after any failure
                _log.exception("key_changes_failed")

    async def follow_once(self, since_ms: int) -> int:
        """Apply the changes stamped since `since_ms` (minus an overlap); the next `since_ms`."""
        try:
            changes, until_ms = await self._auth.changes(since_ms=max(0, since_ms - _OVERLAP_MS))
        except AppError as exc:
            _log.debug("key_changes_unavailable", code=exc.error_code)
            return since_ms  # auth-service is away: catch up from here when it is back
        now = time.monotonic()
        for change in changes:
            if (change.user_id, change.version) not in self._seen:
                self._seen[(change.user_id, change.version)] = now
                await self.announce(change)
        horizon = now - 3 * _OVERLAP_MS / 1000
        self._seen = {seen: at for seen, at in self._seen.items() if at > horizon}
        return until_ms
