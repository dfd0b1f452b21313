"""The latest version of each user (a count of their key and plan changes), shared in Redis.

auth-service counts a user's version up with every rotation, revocation and plan change, in the
same update as the change, and reports it with every verification. The gateway that makes a
change announces the new version here; every replica checks its cached verification against it
before trusting it (one GET), so a revoked key is refused everywhere from the next request.

Announcements only ever raise the stored version (a late, older one cannot lower it), and a
verification announces the version it saw, so after Redis loses its data the first verification
of each user re-establishes it. Anything unknown is treated as "verify again": no stored version,
or Redis not answering.
"""

from __future__ import annotations

import redis.asyncio as redis
import structlog
from redis.exceptions import RedisError

_log = structlog.get_logger("key_versions")
_PREFIX = "keyver:"
KEY_VERSION_SECONDS = 86_400  # a version unused this long is dropped (and re-announced on need)

# KEYS[1] = the user's version; ARGV = a version seen, seconds to keep it. Returns the latest.
_ANNOUNCE = """
local latest = tonumber(redis.call('GET', KEYS[1]) or '-1')
local seen = tonumber(ARGV[1])
if seen > latest then
  latest = seen
end
redis.call('SET', KEYS[1], latest, 'EX', ARGV[2])
return latest
"""


class KeyVersions:
    def __init__(self, client: redis.Redis, *, keep_seconds: int) -> None:
        self._client = client
        self._announce = client.register_script(_ANNOUNCE)
        self._keep = max(1, keep_seconds)

    async def is_current(self, user_id: str, version: int) -> bool:
        """Whether a verification that saw `version` is still the latest (False when unknown)."""
        try:
            latest = await self._client.get(_PREFIX + user_id)
        except RedisError as exc:
            _log.debug("key_version_unavailable", error_type=type(exc).__name__)
            return False
        return latest is not None and int(latest) <= version

    async def announce(self, user_id: str, version: int) -> int | None:
        """Record that `version` exists; the latest version, or None when Redis did not answer."""
        try:
            latest = await self._announce(keys=[_PREFIX + user_id], args=[version, self._keep])
        except RedisError as exc:
            _log.warning("key_version_not_announced", error_type=type(exc).__name__)
            return None
        return int(latest)
