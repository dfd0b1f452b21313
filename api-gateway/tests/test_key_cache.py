"""The verified-key cache on its own, with a hand-driven clock."""

from __future__ import annotations

import pytest
from api_gateway.key_cache import CachedKey, VerifiedKeyCache
from api_gateway.schemas import VerifiedUser
from infergate_common.validation import Plan

ALICE = CachedKey(VerifiedUser(valid=True, userId="a" * 24, plan=Plan.FREE), version=0)
BOB = CachedKey(VerifiedUser(valid=True, userId="b" * 24, plan=Plan.PRO), version=3)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def cache_with(clock: Clock, ttl: float = 1.0, max_entries: int = 100) -> VerifiedKeyCache:
    return VerifiedKeyCache(ttl_seconds=ttl, max_entries=max_entries, clock=clock)


def test_a_verified_key_is_trusted_for_the_ttl_counted_from_when_verification_started(
    clock: Clock,
) -> None:
    cache = cache_with(clock)
    started = cache.now()
    clock.now += 0.3  # the call to auth-service took 0.3 s
    cache.put("sk_a", ALICE, verified_at=started)
    assert cache.get("sk_a") == ALICE
    clock.now += 0.69
    assert cache.get("sk_a") == ALICE
    clock.now += 0.01
    assert cache.get("sk_a") is None
    assert len(cache) == 0


def test_a_verification_slower_than_the_ttl_is_not_kept(clock: Clock) -> None:
    cache = cache_with(clock)
    started = cache.now()
    clock.now += 1.5
    cache.put("sk_a", ALICE, verified_at=started)
    assert cache.get("sk_a") is None


def test_invalidate_forgets_the_key_and_refuses_verifications_that_started_before(
    clock: Clock,
) -> None:
    cache = cache_with(clock)
    cache.put("sk_a", ALICE, verified_at=cache.now())
    in_flight = cache.now()  # a verification that read the key before it was revoked
    clock.now += 0.1
    cache.invalidate("sk_a")
    assert cache.get("sk_a") is None
    cache.put("sk_a", ALICE, verified_at=in_flight)
    assert cache.get("sk_a") is None
    clock.now += 0.1
    cache.put("sk_a", ALICE, verified_at=cache.now())  # verified afresh after the change
    assert cache.get("sk_a") == ALICE


def test_invalidate_user_forgets_only_that_users_keys(clock: Clock) -> None:
    cache = cache_with(clock)
    for key, user in (("sk_a1", ALICE), ("sk_a2", ALICE), ("sk_b", BOB)):
        cache.put(key, user, verified_at=cache.now())
    cache.invalidate_user(ALICE.user.userId)
    assert (cache.get("sk_a1"), cache.get("sk_a2"), cache.get("sk_b")) == (None, None, BOB)


def test_the_cache_is_bounded_and_drops_the_oldest_first(clock: Clock) -> None:
    cache = cache_with(clock, max_entries=3)
    for i in range(5):
        cache.put(f"sk_{i}", ALICE, verified_at=cache.now())
    assert len(cache) == 3
    assert [cache.get(f"sk_{i}") is not None for i in range(5)] == [False, False, True, True, True]
    for i in range(10):
        cache.invalidate(f"sk_x{i}")
    assert len(cache._invalidated) == 3


def test_keys_are_held_only_as_their_sha256(clock: Clock) -> None:
    cache = cache_with(clock)
    key = "sk_" + "s3cr3t" * 7
    cache.put(key, ALICE, verified_at=cache.now())
    cache.invalidate("sk_other")
    held = repr(cache._entries) + repr(cache._invalidated)
    assert "s3cr3t" not in held
    assert len(next(iter(cache._entries))) == 64


def test_a_zero_ttl_disables_the_cache(clock: Clock) -> None:
    cache = cache_with(clock, ttl=0)
    cache.put("sk_a", ALICE, verified_at=cache.now())
    assert cache.get("sk_a") is None
    assert len(cache) == 0
