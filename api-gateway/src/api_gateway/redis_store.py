"""The gateway's Redis client: one server, a Redis Cluster, or the primary that Sentinels name
(REDIS_MODE), made in one place with the same short timeouts whatever the topology.

Every Redis failure reaches the gateway as a `redis.exceptions.RedisError`, which its callers
turn into a decision (the rate limiter fails open or closed, key verifications are asked again,
settlements are delivered directly). redis-py's cluster client also raises
`RedisClusterException`, which is not one (no node reachable, a slot that no node serves), and
during a failover even AttributeError (see GatewayCluster): both are translated here, once.

Every command that names several keys names keys of one hash tag (one cluster slot): the
settlement outbox's keys share `{settlements}`, a user's version and doubt marks share
`{<user id>}`, and the rate limiter's script takes a single key.

Lua scripts run as `LuaScript`, not redis-py's `register_script`: a server that does not know a
script (restarted, or a replica just promoted: Redis does not replicate its script cache) gets it
in that same call (EVAL), where `register_script` would first load it on every primary.

Failover, measured by api-gateway/tests/test_redis_topologies.py (loopback, a primary SIGKILLed
under load, cluster-node-timeout and down-after-milliseconds 1000 ms, idle and both cores busy):
* Redis Cluster, cluster-require-full-coverage no: the killed primary's users fail open for
  1.7-2.8 s, until its replica is promoted, then are exact again; nobody else notices; the slowest
  call took 0.16-0.33 s (once 1.0 s with both cores busy).
* Redis Cluster at Redis' default (yes): the same, but every node refuses every command while the
  slots are unserved, so a few calls of other users fail open too (0-25 a run), and a call took up
  to 0.6-1.4 s (redis-py pauses 0.25 s on CLUSTERDOWN before its retry).
* Sentinel: every call fails open for 3.0-3.1 s (down-after, then the promotion); the client
  follows the new primary at once; the slowest call took 0.03-0.16 s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.typing import EncodableT, KeyT

from api_gateway.config import RedisEndpoint, RedisMode, Settings

# A cluster's client (RedisCluster) or a single server's (Redis, also in sentinel mode): the
# commands and scripts the gateway uses work the same on both.
RedisClient = redis.Redis | RedisCluster


class ClusterCommandError(RedisError):
    """The cluster client could not run a command (no node answered, a slot that no node
    serves, keys in several slots)."""


class GatewayCluster(RedisCluster):
    """RedisCluster whose every failure is a RedisError, and which knows the slot map before it
    routes a command."""

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        try:
            # redis-py 8.1 decides where a command goes before it reads the slot map: while it
            # has none (first use, or dropped after CLUSTERDOWN or repeated MOVED), concurrent
            # commands go to any node, and the MOVED replies make it close connections other
            # commands are using. Reading the map first (a no-op while it is known) avoids it:
            # of 32 users' concurrent first calls on a fresh client, 14-23 failed without this
            # line, none with it.
            await self.initialize()
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterCommandError(str(exc)) from exc
        except AttributeError as exc:
            # When it drops its slot map (on CLUSTERDOWN, and after repeated MOVED: both happen
            # in a failover) redis-py 8.1 closes every connection, those other commands are
            # writing to as well; such a command fails with AttributeError (its connection has no
            # writer any more), 1-2 times per failover in the tests. It is that failover.
            raise ClusterCommandError(f"connection closed under the command: {exc}") from exc


class LuaScript:
    """A Lua script run by its SHA1 (EVALSHA), sent in full (EVAL, which also keeps it on that
    server) only to a server that does not know it yet. Raises redis' errors."""

    def __init__(self, client: RedisClient, source: str) -> None:
        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, *, keys: Sequence[KeyT], args: Sequence[EncodableT]) -> Any:
        try:
            return await self._client.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._client.eval(self._source, len(keys), *keys, *args)


# The cluster client refuses a command at once (MaxConnectionsError) when a node already has
# this many connections in use; its default, 100, is reached by a burst of concurrent chats, which
# would then fail open for no reason. The single-server client has no limit; Redis' own maxclients
# (10,000 by default) bounds both.
_MAX_CONNECTIONS_PER_NODE = 10_000


def _quick_retry() -> Retry:
    # One quick retry (a pooled connection may have been dropped by a restart); redis-py's
    # default, 10 retries with backoff, holds a request ~4.5 s when Redis is down, where fail-open
    # should answer at once.
    return Retry(ExponentialBackoff(cap=0.05, base=0.01), 1)


def open_redis(settings: Settings, stack: AsyncExitStack) -> RedisClient:
    """The client REDIS_MODE asks for, closed with `stack`. No I/O: it connects on first use."""
    endpoint = settings.redis_endpoint
    common: dict[str, Any] = {
        "username": endpoint.username,
        "password": endpoint.password,
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
    }
    if settings.redis_mode is RedisMode.CLUSTER:
        cluster = _cluster(endpoint, common)
        stack.push_async_callback(cluster.aclose)
        return cluster
    if endpoint.tls:
        common["ssl"] = True
    if settings.redis_mode is RedisMode.SENTINEL:
        # redis-py's Sentinel.__init__ is unannotated.
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            settings.sentinel_addresses,
            sentinel_kwargs={
                "password": settings.redis_sentinel_password.get_secret_value() or None,
                "socket_timeout": settings.redis_timeout,
                "socket_connect_timeout": settings.redis_timeout,
                "retry": _quick_retry(),
            },
        )
        stack.push_async_callback(sentinel.aclose)
        primary: redis.Redis = sentinel.master_for(
            settings.redis_sentinel_master, db=endpoint.db, retry=_quick_retry(), **common
        )
        stack.push_async_callback(primary.aclose)
        return primary
    client = redis.Redis(
        host=endpoint.host, port=endpoint.port, db=endpoint.db, retry=_quick_retry(), **common
    )
    stack.push_async_callback(client.aclose)
    return client


def _cluster(endpoint: RedisEndpoint, common: dict[str, Any]) -> GatewayCluster:
    # redis-py follows MOVED and ASK itself (up to 16 redirections) and, after a connection
    # error or CLUSTERDOWN, re-reads the slot map and tries once more (a CLUSTERDOWN after a
    # 0.25 s pause): a call that meets a failover fails quickly and the limiter answers for it.
    # Slots that no node serves fail alone; the others go on serving.
    return GatewayCluster(
        host=endpoint.host,
        port=endpoint.port,
        ssl=endpoint.tls,
        retry=_quick_retry(),
        require_full_coverage=False,
        max_connections=_MAX_CONNECTIONS_PER_NODE,
        **common,
    )


async def redis_ready(client: RedisClient) -> bool:
    """Redis answers; a cluster also reports every slot served (cluster_state:ok)."""
    try:
        if isinstance(client, RedisCluster):
            info = await client.cluster_info()
            return info.get("cluster_state") == "ok"
        return bool(await client.ping())
    except RedisError:
        return False
