"""The settlement outbox, in Redis: a chat's charge is recorded here, durably, before its answer
goes out, and applied to the ledger afterwards by whichever gateway gets to it.

Three structures under one hash tag (one Redis Cluster slot, so each script may touch all three):

* `records` (hash): reservation id -> the settlement to apply (its JSON wire shape).
* `due` (sorted set): reservation id -> when a gateway may (again) try to deliver it, in ms of
  Redis' clock. The gateway that records a settlement delivers it at once and deletes it once
  usage-service has applied it; if that does not happen (that gateway died, usage-service or the
  database is down) it falls due after a lease, and the next claim of any gateway takes it.
* `inflight` (sorted set): streams that have sent output, reservation id -> their deadline. The
  record of such a stream is its conservative settlement (the reservation in full, INTERRUPTED)
  until the stream's own final settlement replaces it; a stream whose gateway died first is
  charged in full once its deadline has passed.

Applying a settlement is idempotent in usage-service (by reservation id), so a record delivered
twice (a lease ran out during a slow delivery) is charged once. Redis must keep what it
acknowledges: the local stack and compose run it with an append-only file. With replicas (a Redis
Cluster, Sentinel) replication is asynchronous: a failover may lose what the old primary
acknowledged in its last moments (its replication lag, normally milliseconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infergate_common.billing import Settlement

from api_gateway.redis_store import LuaScript, RedisClient

_PREFIX = "infergate:{settlements}:"

# The current time in ms by Redis' clock (the same for every gateway).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: records, inflight. ARGV: reservation id, settlement in full, ms until the deadline.
_MARK = (
    _NOW
    + """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""
)

# KEYS: records, due, inflight. ARGV: reservation id, settlement, lease ms, 1 if marked, then
# the ids of settlements applied since (acknowledged in the same round trip: see Settler).
# Returns 0 when a marked stream's deadline passed first (it is charged in full), else 1.
_RECORD = (
    _NOW
    + """
for i = 5, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
end
if ARGV[4] == '1' and redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""
)

# KEYS: records, due, inflight. ARGV: lease ms, most to take. Moves streams past their deadline
# to `due`, then leases out the records that are due. Returns their settlements.
_CLAIM = (
    _NOW
    + """
local overdue = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, ARGV[2])
for _, rid in ipairs(overdue) do
  redis.call('ZREM', KEYS[3], rid)
  redis.call('ZADD', KEYS[2], now, rid)
end
local ready = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, ARGV[2])
local claimed = {}
for _, rid in ipairs(ready) do
  local record = redis.call('HGET', KEYS[1], rid)
  if record then
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), rid)
    table.insert(claimed, record)
  else
    redis.call('ZREM', KEYS[2], rid)
  end
end
return claimed
"""
)

# KEYS: records, due. ARGV: reservation ids applied to the ledger. A script rather than MULTI:
# the same one round trip on a single server and on a cluster (whose client's transactions
# raise errors of their own).
_ACKNOWLEDGE = """
for _, rid in ipairs(ARGV) do
  redis.call('HDEL', KEYS[1], rid)
  redis.call('ZREM', KEYS[2], rid)
end
return 1
"""


@dataclass(frozen=True, slots=True)
class OutboxKeys:
    records: str = _PREFIX + "records"
    due: str = _PREFIX + "due"
    inflight: str = _PREFIX + "inflight"


class SettlementOutbox:
    """Every method raises redis' errors: the caller decides what a missing record means."""

    def __init__(self, client: RedisClient, *, lease_ms: int, keys: OutboxKeys = OutboxKeys()):
        self._client = client
        self._keys = keys
        self._lease_ms = lease_ms
        self._mark = LuaScript(client, _MARK)
        self._record = LuaScript(client, _RECORD)
        self._claim = LuaScript(client, _CLAIM)
        self._acknowledge = LuaScript(client, _ACKNOWLEDGE)

    async def mark(self, in_full: Settlement, *, deadline_ms: int) -> None:
        """A stream is about to send output: charge `in_full` unless its end is recorded within
        `deadline_ms`."""
        keys = [self._keys.records, self._keys.inflight]
        await self._mark(keys=keys, args=[in_full.reservation_id, _json(in_full), deadline_ms])

    async def record(
        self, settlement: Settlement, *, marked: bool, applied: Sequence[str] = ()
    ) -> bool:
        """Record a chat's settlement; False when it was marked and its deadline passed first.
        `applied`: settlements applied to the ledger since, acknowledged in the same call."""
        keys = [self._keys.records, self._keys.due, self._keys.inflight]
        args: list[str | int] = [
            settlement.reservation_id,
            _json(settlement),
            self._lease_ms,
            int(marked),
            *applied,
        ]
        return bool(await self._record(keys=keys, args=args))

    async def claim(self, *, limit: int) -> list[Settlement]:
        """Settlements that are due (leased to the caller for a while), oldest first."""
        keys = [self._keys.records, self._keys.due, self._keys.inflight]
        raw = await self._claim(keys=keys, args=[self._lease_ms, limit])
        return [Settlement.model_validate_json(item) for item in raw]

    async def acknowledge(self, reservation_ids: list[str]) -> None:
        """Applied to the ledger: forget them."""
        if not reservation_ids:
            return
        keys = [self._keys.records, self._keys.due]
        await self._acknowledge(keys=keys, args=list(reservation_ids))

    async def backlog(self) -> int:
        """How many settlements wait to be applied (streams in flight included)."""
        return int(await self._client.hlen(self._keys.records))


def _json(settlement: Settlement) -> str:
    return settlement.model_dump_json(by_alias=True)
