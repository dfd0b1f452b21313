"""The latest version of each user (a count of their key and plan changes), shared in Redis.

auth-service counts a user's version up with every rotation, revocation and plan change, in the
same update as the change, and reports it with every verification. The gateway that makes a
change announces the new version here; every replica checks its cached verification against it
before trusting it (one GET), so a revoked key is refused everywhere from the next request.

Announcements only ever raise the stored version (a late, older one cannot lower it), and a
verification announces the version it saw, so after Redis loses its data the first verification
of each user re-establishes it. Anything unknown is treated as "verify again": no stored version,
or Redis not answering.

A rotation or revocation whose outcome the gateway does not learn (auth-service timed out or
failed) has no version to announce: the key itself is then marked "in doubt" for as long as any
cached verification may live, and no replica uses a cached verification of it meanwhile. The mark
is named by a keyed digest of the key, never the key or the hash auth-service stores.

A user's version and the doubt marks of their keys share one hash tag, the user id
(`keyver:{<user id>}`, `keydoubt:{<user id>}:<digest>`), so the one-round-trip reads and the
announce script work on a Redis Cluster (one slot). Keys of the untagged names an older gateway
wrote (`keyver:<user id>`, `keydoubt:<digest>`) are simply never read again: a version that is not
found means "verify again", which is safe, and they expire on their own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import structlog
from prometheus_client import Counter
from redis.exceptions import RedisError

from api_gateway.redis_store import LuaScript, RedisClient

_log = structlog.get_logger("key_versions")
KEY_VERSION_SECONDS = 86_400  # a version unused this long is dropped (and re-announced on need)

# KEYS[1] = the user's version, KEYS[2] (optional) = the doubt mark of a key of theirs (one
# slot); ARGV = a version seen, seconds to keep it. Returns {the latest version, 1 if the key
# is in doubt}.
_ANNOUNCE = """
local latest = tonumber(redis.call('GET', KEYS[1]) or '-1')
local seen = tonumber(ARGV[1])
if seen > latest then
  latest = seen
end
redis.call('SET', KEYS[1], latest, 'EX', ARGV[2])
local doubt = 0
if #KEYS > 1 then
  doubt = redis.call('EXISTS', KEYS[2])
end
return {latest, doubt}
"""


class KeyVersions:
    def __init__(self, client: RedisClient, *, keep_seconds: int, errors: Counter) -> None:
        """`errors` counts the Redis calls that failed."""
        self._client = client
        self._errors = errors
        self._announce = LuaScript(client, _ANNOUNCE)
        self._keep = max(1, keep_seconds)

    async def is_current(self, user_id: str, version: int, api_key: str) -> bool:
        """Whether a verification of `api_key` that saw `version` is still the latest and the
        key is not in doubt (False when unknown). One round trip."""
        try:
            latest, doubt = await self._client.mget(*version_check(user_id, version, api_key).keys)
        except RedisError as exc:
            self._errors.inc()
            _log.debug("key_version_unavailable", error_type=type(exc).__name__)
            return False
        return latest is not None and int(latest) <= version and doubt is None

    async def doubt(self, user_id: str, api_key: str, *, seconds: float) -> None:
        """A change of this key of `user_id`'s may have happened: no cached verification of it
        for `seconds`."""
        try:
            await self._client.set(doubt_key(user_id, api_key), 1, px=max(1, int(seconds * 1000)))
        except RedisError as exc:
            self._errors.inc()
            _log.warning("key_doubt_not_recorded", error_type=type(exc).__name__)

    async def announce(self, user_id: str, version: int) -> int | None:
        """Record that `version` exists; the latest version, or None when Redis did not answer."""
        latest, _ = await self._run_announce(user_id, version, [])
        return latest

    async def may_cache(self, user_id: str, version: int, api_key: str) -> bool:
        """After verifying `api_key` afresh: announce the version it saw, and tell whether the
        verification may be cached (no newer version announced, the key not in doubt)."""
        latest, doubt = await self._run_announce(user_id, version, [doubt_key(user_id, api_key)])
        return latest is not None and latest <= version and not doubt

    async def _run_announce(
        self, user_id: str, version: int, extra_keys: list[str]
    ) -> tuple[int | None, bool]:
        try:
            latest, doubt = await self._announce(
                keys=[version_key(user_id), *extra_keys], args=[version, self._keep]
            )
        except RedisError as exc:
            self._errors.inc()
            _log.warning("key_version_not_announced", error_type=type(exc).__name__)
            return None, True
        return int(latest), bool(doubt)


@dataclass(frozen=True, slots=True)
class VersionCheck:
    """What `is_current` reads, for a script that checks it in its own round trip (see
    rate_limit): the user's version key and the key's doubt mark (one slot), and the version the
    cached verification saw. Current when a version is stored, not above `version`, and the key
    is not in doubt."""

    keys: tuple[str, str]
    version: int


def version_check(user_id: str, version: int, api_key: str) -> VersionCheck:
    return VersionCheck((version_key(user_id), doubt_key(user_id, api_key)), version)


def version_key(user_id: str) -> str:
    """Where the user's latest version is kept."""
    return f"keyver:{{{user_id}}}"


def doubt_key(user_id: str, api_key: str) -> str:
    """Where a key's doubt mark is kept: in its user's slot."""
    # Not the plain SHA-256 auth-service stores as the lookup hash: a different digest.
    digest = hashlib.sha256(b"infergate-key-doubt:" + api_key.encode()).hexdigest()
    return f"keydoubt:{{{user_id}}}:{digest}"
