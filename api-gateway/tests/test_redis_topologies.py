"""The gateway on a Redis Cluster (3 primaries, 3 replicas) and on a primary managed by a Sentinel:
its real limiter, key versions and settlement outbox through the client `redis_store` makes, the
gateway itself in cluster mode, and what callers see while a primary is killed (SIGKILL).

Failover, as measured here (loopback, cluster-node-timeout and down-after-milliseconds 1000 ms,
idle and with both cores busy): the calls of the killed primary's users fail open (answered,
never raised) for 1.7-2.8 s in the cluster, until its replica is promoted, and for 3.0-3.1 s with
the Sentinel; then limits are exact again. With cluster-require-full-coverage no, no other user
is affected; with Redis' default (yes), a few calls of other users fail open too. The tests print
the figures of each run (`pytest -s`); the ranges are in api_gateway/redis_store.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_gateway.admission import user_window
from api_gateway.config import RedisMode, Settings
from api_gateway.key_versions import KeyVersions, doubt_key, version_check, version_key
from api_gateway.main import create_app
from api_gateway.rate_limit import SlidingWindowLimiter
from api_gateway.redis_store import RedisClient, open_redis, redis_ready
from api_gateway.schemas import VerifiedUser
from api_gateway.settlement_outbox import SettlementOutbox
from fastapi import FastAPI
from gateway_downstream import TOKEN, USER_ID, VALID_KEY, Downstream, gateway_settings, reply
from infergate_common.billing import RequestStatus, Settlement
from infergate_common.errors import UpstreamUnavailableError
from infergate_common.validation import Plan
from pydantic import SecretStr, ValidationError
from recorded_metrics import Recorded
from redis_cluster import (
    RedisClusterDeployment,
    SentinelDeployment,
    running_cluster,
    running_sentinel,
    wait_for_async,
)

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]
WINDOW_S = 60


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterDeployment]:
    with running_cluster(tmp_path_factory.mktemp("redis-cluster")) as deployment:
        yield deployment


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[SentinelDeployment]:
    with running_sentinel(tmp_path) as deployment:
        yield deployment


def cluster_settings(cluster: RedisClusterDeployment, **overrides: Any) -> Settings:
    return gateway_settings(cluster.seed_port, redis_mode="cluster", **overrides)


def sentinel_settings(sentinel: SentinelDeployment) -> Settings:
    # REDIS_PORT names nothing that listens: in sentinel mode the Sentinel names the primary.
    return gateway_settings(1, redis_mode="sentinel", redis_sentinels=sentinel.address)


@pytest.fixture
async def cluster_client(cluster: RedisClusterDeployment) -> AsyncIterator[RedisClient]:
    async with AsyncExitStack() as stack:
        yield open_redis(cluster_settings(cluster), stack)


def make_limiter(
    client: RedisClient, recorded: Recorded, *, fail_open: bool = True
) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(client, fail_open=fail_open, name="user", metrics=recorded.metrics)


def users(count: int) -> list[str]:
    return [f"rate_limit:{uuid.uuid4().hex[:24]}" for _ in range(count)]


async def allowed_per_user(
    limiter: SlidingWindowLimiter, keys: list[str], *, limit: int, tries: int
) -> dict[str, int]:
    """Concurrent hits, `tries` per user; how many each user was allowed (none failed open)."""
    hits = [limiter.hit(key, limit=limit, window_s=WINDOW_S) for key in keys for _ in range(tries)]
    decisions = await asyncio.gather(*hits)
    assert not any(decision.degraded for decision in decisions)
    counts = dict.fromkeys(keys, 0)
    for index, decision in enumerate(decisions):
        counts[keys[index // tries]] += decision.allowed
    return counts


# -- a Redis Cluster ----------------------------------------------------------------------------


async def test_the_limiter_allows_exactly_the_limit_for_every_user_across_all_primaries(
    cluster: RedisClusterDeployment, cluster_client: RedisClient, recorded: Recorded
) -> None:
    keys = users(60)
    counts = await allowed_per_user(make_limiter(cluster_client, recorded), keys, limit=5, tries=8)
    assert set(counts.values()) == {5}
    owners = set((await asyncio.to_thread(cluster.owners, keys)).values())
    primaries = cluster.primaries()
    assert owners == set(primaries)
    assert len(primaries) == 3
    assert all(cluster.keys_on(port) > 0 for port in primaries)  # windows on all three


async def test_key_versions_and_doubt_marks_share_each_users_slot(
    cluster: RedisClusterDeployment, cluster_client: RedisClient, recorded: Recorded
) -> None:
    errors = recorded.metrics.redis_errors.labels("key_versions")
    versions = KeyVersions(cluster_client, keep_seconds=60, errors=errors)
    candidates = {version_key(user): user for user in (uuid.uuid4().hex[:24] for _ in range(60))}
    by_primary: dict[int | None, str] = {}
    for key, port in cluster.owners(list(candidates)).items():
        by_primary.setdefault(port, candidates[key])
    assert len(by_primary) == 3  # a user on each primary
    for user in by_primary.values():
        key = f"sk_{user}"
        assert not await versions.is_current(user, 0, key)  # nothing known: verify again
        assert await versions.may_cache(user, 2, key)  # announced with the verification
        assert await versions.announce(user, 1) == 2  # a late, older one does not lower it
        assert await versions.is_current(user, 2, key)
        await versions.doubt(user, key, seconds=30)
        assert not await versions.is_current(user, 2, key)
        assert not await versions.may_cache(user, 2, key)
        assert await versions.is_current(user, 2, key + "x")  # only that key is in doubt
    assert recorded.value("infergate_redis_errors_total", operation="key_versions") == 0


async def test_a_chats_key_check_and_count_run_in_one_script_on_every_primary(
    cluster: RedisClusterDeployment, cluster_client: RedisClient, recorded: Recorded
) -> None:
    """The window key carries the user's hash tag: the script that checks a cached verification
    and counts the chat finds its three keys in one slot, whichever primary holds it."""
    errors = recorded.metrics.redis_errors.labels("key_versions")
    versions = KeyVersions(cluster_client, keep_seconds=60, errors=errors)
    limiter = make_limiter(cluster_client, recorded)
    settings = gateway_settings(cluster.seed_port, free_rate_limit=2)
    candidates = {version_key(user): user for user in (uuid.uuid4().hex[:24] for _ in range(60))}
    by_primary: dict[int | None, str] = {}
    for key, port in cluster.owners(list(candidates)).items():
        by_primary.setdefault(port, candidates[key])
    assert len(by_primary) == 3
    for user_id in by_primary.values():
        api_key = f"sk_{user_id}"
        window, limit, window_s = user_window(
            VerifiedUser(valid=True, userId=user_id, plan=Plan.FREE), settings
        )
        check = version_check(user_id, 2, api_key)
        assert (
            await limiter.hit_if_current(window, limit=limit, window_s=window_s, check=check)
            is None
        )
        assert await versions.may_cache(user_id, 2, api_key)
        counted = [
            await limiter.hit_if_current(window, limit=limit, window_s=window_s, check=check)
            for _ in range(3)
        ]
        assert [decision.allowed if decision else None for decision in counted] == [
            True,
            True,
            False,
        ]
    assert recorded.value("infergate_redis_errors_total", operation="rate_limit") == 0


def settlement(status: RequestStatus = RequestStatus.SUCCESS) -> Settlement:
    return Settlement(
        reservation_id=uuid.uuid4().hex,
        request_id="req-1",
        user_id=USER_ID,
        plan=Plan.FREE,
        reserved_tokens=100,
        prompt_tokens=9,
        completion_tokens=3,
        status=status,
        model="llama3",
        response_time_ms=1.0,
        started_at=datetime.now(UTC),
    )


async def test_the_settlement_outbox_records_claims_and_acknowledges(
    cluster_client: RedisClient,
) -> None:
    outbox = SettlementOutbox(cluster_client, lease_ms=1)
    done, stream = settlement(), settlement(RequestStatus.CANCELLED)
    assert await outbox.record(done, marked=False)
    await outbox.mark(stream, deadline_ms=60_000)
    assert await outbox.record(stream, marked=True)
    claimed: list[Settlement] = []

    async def both_claimed() -> bool:
        claimed.extend(await outbox.claim(limit=10))
        return {s.reservation_id for s in claimed} >= {done.reservation_id, stream.reservation_id}

    await wait_for_async("both settlements due", both_claimed, timeout_s=5)
    assert await outbox.backlog() == 2
    await outbox.acknowledge([done.reservation_id, stream.reservation_id])
    assert await outbox.backlog() == 0


async def test_the_gateway_in_cluster_mode_limits_chats_and_marks_keys_in_doubt(
    cluster: RedisClusterDeployment, app_client: AppClient, downstream: Downstream
) -> None:
    settings = cluster_settings(cluster, free_rate_limit=3)
    async with app_client(create_app(settings, transport=downstream.transport())) as gateway:
        ready = await gateway.get("/readyz")
        assert (ready.status_code, ready.json()["checks"]["redis"]) == (200, "ok")
        key = {"x-api-key": VALID_KEY}
        chats = [gateway.post("/v1/chat", json={"prompt": "Hi"}, headers=key) for _ in range(10)]
        statuses = sorted(r.status_code for r in await asyncio.gather(*chats))
        assert statuses == [200] * 3 + [429] * 7
        assert len(await downstream.settled(3)) == 3  # through the outbox on the cluster
        downstream.override("auth", "/auth/keys/rotate", reply(504, {"message": "x"}))
        assert (await gateway.post("/v1/keys/rotate", headers=key)).status_code == 504
    async with AsyncExitStack() as stack:
        client = open_redis(settings, stack)
        assert await client.exists(doubt_key(USER_ID, VALID_KEY)) == 1
        assert await redis_ready(client)


@dataclass
class Load:
    """Limiter calls in a loop while a primary is killed: when each was answered, and how."""

    started: float = field(default_factory=time.monotonic)
    answers: list[tuple[float, str, bool]] = field(default_factory=list)  # at, key, failed open
    closed: int = 0  # 503s of the fail-closed limiter
    slowest_s: float = 0.0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(
        self, open_: SlidingWindowLimiter, closed: SlidingWindowLimiter, key: str
    ) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            decision = await open_.hit(key, limit=1_000_000, window_s=WINDOW_S)
            assert decision.allowed  # failed open, or allowed: never limited here
            answered = time.monotonic()
            try:  # the same window: the same primary
                await closed.hit(key, limit=1_000_000, window_s=WINDOW_S)
            except UpstreamUnavailableError:
                self.closed += 1
            now = time.monotonic()
            self.slowest_s = max(self.slowest_s, answered - began, now - answered)
            self.answers.append((answered, key, decision.degraded))
            await asyncio.sleep(0.005)  # the load's pace (about 100 calls/s a user), not a wait

    def failed_open(self, keys: set[str]) -> list[float]:
        return [at for at, key, degraded in self.answers if degraded and key in keys]

    async def answered_after(self, moment: float, keys: set[str]) -> bool:
        """Every key has had an exact (not failed-open) answer since `moment`."""
        exact = {key for at, key, degraded in self.answers if at > moment and not degraded}
        return exact >= keys


async def run_failover(
    client: RedisClient,
    recorded: Recorded,
    keys: list[str],
    *,
    kill: Callable[[], None],
    promoted: Callable[[], Awaitable[bool]],
) -> tuple[Load, float, float]:
    """Load on `keys` (one worker each), then `kill()`; waits for `promoted()`, then for an exact
    answer for every key. The load, and the seconds from the kill to each."""
    load = Load()
    open_, closed = make_limiter(client, recorded), make_limiter(client, recorded, fail_open=False)
    workers = [asyncio.create_task(load.run(open_, closed, key)) for key in keys]

    async def exact_since(moment: float) -> bool:
        # A worker that stopped (an exception escaped a call) ends the wait: asserted below.
        return any(w.done() for w in workers) or await load.answered_after(moment, set(keys))

    try:
        await wait_for_async("load running", lambda: exact_since(load.started))
        killed_at = time.monotonic()
        kill()
        promotion_s = await wait_for_async("replica promoted", promoted)
        promoted_at = time.monotonic()
        await wait_for_async("every key answered exactly", lambda: exact_since(promoted_at))
        exact_s = time.monotonic() - killed_at
    finally:
        load.stop.set()
        results = await asyncio.gather(*workers, return_exceptions=True)
    assert [r for r in results if r is not None] == []  # no exception escaped any call
    assert not any(degraded for at, _, degraded in load.answers if at < killed_at)
    return load, promotion_s, exact_s


@pytest.mark.faults
@pytest.mark.parametrize("full_coverage", [False, True], ids=["coverage-no", "coverage-yes"])
async def test_a_killed_primary_is_replaced_and_every_call_is_answered_meanwhile(
    tmp_path: Path, recorded: Recorded, full_coverage: bool
) -> None:
    """On a cluster of its own. With cluster-require-full-coverage no (the recommended setting)
    only the killed primary's users fail open; with Redis' default (yes) the whole cluster
    answers CLUSTERDOWN until the promotion, so a few calls of other users fail open too."""
    with running_cluster(tmp_path, require_full_coverage=full_coverage) as cluster:
        victim = cluster.by_port(cluster.primaries()[0])
        owners = cluster.owners(users(40))
        on_victim = [key for key, port in owners.items() if port == victim.port][:4]
        elsewhere = [key for key, port in owners.items() if port != victim.port][:4]

        def replaced() -> bool:
            owner = cluster.owners(on_victim[:1])[on_victim[0]]
            return owner not in (None, victim.port) and cluster.state_ok(owner)

        async def promoted() -> bool:
            return await asyncio.to_thread(replaced)

        async with AsyncExitStack() as stack:
            client = open_redis(cluster_settings(cluster), stack)
            load, promotion_s, exact_s = await run_failover(
                client, recorded, on_victim + elsewhere, kill=victim.kill, promoted=promoted
            )
            failed, others = load.failed_open(set(on_victim)), load.failed_open(set(elsewhere))
            assert failed  # the kill was felt, and answered
            if not full_coverage:
                assert others == []  # the other primaries' users were never affected
            print(
                f"cluster failover (full coverage {full_coverage}): promoted after "
                f"{promotion_s:.2f} s, exact for every key after {exact_s:.2f} s; failed open "
                f"{len(failed)} calls over {failed[-1] - failed[0]:.2f} s on the killed primary, "
                f"{len(others)} elsewhere; {load.closed} fail-closed 503s; slowest call "
                f"{load.slowest_s * 1000:.0f} ms"
            )
            counts = await allowed_per_user(
                make_limiter(client, recorded), users(30), limit=5, tries=7
            )
            assert set(counts.values()) == {5}  # exact again, on the promoted replica too


# -- a Sentinel-managed primary -----------------------------------------------------------------


async def test_on_a_sentinel_managed_primary_the_limiter_and_key_versions_work(
    sentinel: SentinelDeployment, recorded: Recorded
) -> None:
    async with AsyncExitStack() as stack:
        client = open_redis(sentinel_settings(sentinel), stack)
        assert await redis_ready(client)
        counts = await allowed_per_user(make_limiter(client, recorded), users(5), limit=3, tries=5)
        assert set(counts.values()) == {3}
        errors = recorded.metrics.redis_errors.labels("key_versions")
        versions = KeyVersions(client, keep_seconds=60, errors=errors)
        assert await versions.may_cache(USER_ID, 1, VALID_KEY)
        await versions.doubt(USER_ID, VALID_KEY, seconds=30)
        assert not await versions.is_current(USER_ID, 1, VALID_KEY)


@pytest.mark.faults
async def test_the_client_follows_the_replica_the_sentinel_promotes(
    sentinel: SentinelDeployment, recorded: Recorded
) -> None:
    async def promoted() -> bool:
        return await asyncio.to_thread(sentinel.primary_port) == sentinel.replica.port

    async with AsyncExitStack() as stack:
        client = open_redis(sentinel_settings(sentinel), stack)
        load, promotion_s, exact_s = await run_failover(
            client, recorded, users(4), kill=sentinel.primary.kill, promoted=promoted
        )
        failed = load.failed_open({key for _, key, _ in load.answers})
        assert failed
        print(
            f"sentinel failover: promoted after {promotion_s:.2f} s, exact after {exact_s:.2f} s; "
            f"failed open {len(failed)} calls over {failed[-1] - failed[0]:.2f} s; "
            f"{load.closed} fail-closed 503s; slowest call {load.slowest_s * 1000:.0f} ms"
        )
        counts = await allowed_per_user(make_limiter(client, recorded), users(5), limit=3, tries=5)
        assert set(counts.values()) == {3}  # exact on the new primary
        assert await redis_ready(client)


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://u:hunter2@cache:6379", "redis-cluster://u:hunter2@cache", "u:hunter2@cache:6379"],
)
def test_a_redis_url_of_another_scheme_is_refused_naming_the_variable(url: str) -> None:
    with pytest.raises(
        ValidationError, match=r"REDIS_URL must start with redis:// or rediss://"
    ) as refused:
        gateway_settings(6379, redis_url=SecretStr(url))
    assert "hunter2" not in str(refused.value)  # nothing of the URL is repeated


def test_sentinel_mode_without_sentinels_is_refused() -> None:
    with pytest.raises(ValidationError, match="REDIS_SENTINELS .* is required"):
        gateway_settings(6379, redis_mode="sentinel")
    with pytest.raises(ValidationError, match="REDIS_SENTINELS must be comma-separated host:port"):
        gateway_settings(6379, redis_mode="sentinel", redis_sentinels="a:26379,b")


def test_a_cluster_has_only_database_0() -> None:
    with pytest.raises(ValidationError, match="a Redis Cluster has only database 0"):
        gateway_settings(6379, redis_mode="cluster", redis_url=SecretStr("redis://seed:7000/2"))


def test_the_url_overrides_host_and_port_and_its_credentials_win() -> None:
    env = {"redis_username": "gateway", "redis_password": SecretStr("from-env")}
    plain = gateway_settings(6379, redis_url=SecretStr("rediss://cache.internal:6380/3"), **env)
    own = gateway_settings(6379, redis_url=SecretStr("redis://ops:p%40ss@cache:6381"), **env)
    sentinels = gateway_settings(
        6379, redis_mode="sentinel", redis_sentinels="s1:26379, [::1]:26380"
    )
    endpoint = plain.redis_endpoint
    assert (endpoint.host, endpoint.port, endpoint.db, endpoint.tls) == (
        "cache.internal",
        6380,
        3,
        True,
    )
    assert (endpoint.username, endpoint.password) == ("gateway", "from-env")
    assert (own.redis_endpoint.username, own.redis_endpoint.password) == ("ops", "p@ss")
    assert "p@ss" not in repr(own.redis_endpoint)
    assert sentinels.redis_mode is RedisMode.SENTINEL
    assert sentinels.sentinel_addresses == [("s1", 26379), ("::1", 26380)]
    assert gateway_settings(6379).redis_endpoint.host == "127.0.0.1"  # REDIS_HOST as before


def test_the_topology_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_MODE", "sentinel")
    monkeypatch.setenv("REDIS_SENTINELS", "s1:26379,s2:26379")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "gateway-redis")
    monkeypatch.setenv("REDIS_URL", "redis://:secret@ignored/1")
    settings = Settings(internal_token=SecretStr(TOKEN))
    assert settings.redis_mode is RedisMode.SENTINEL
    assert settings.sentinel_addresses == [("s1", 26379), ("s2", 26379)]
    assert settings.redis_sentinel_master == "gateway-redis"
    assert (settings.redis_endpoint.password, settings.redis_endpoint.db) == ("secret", 1)
    monkeypatch.setenv("REDIS_URL", "memcached://cache")
    with pytest.raises(ValidationError, match="REDIS_URL must start with redis://"):
        Settings(internal_token=SecretStr(TOKEN))
