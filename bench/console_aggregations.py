"""What the console's reads cost on SecantusDB: per-day usage, top users, the user search.

    uv run --frozen python -m bench.console_aggregations [--users 2000] [--entries 5]

Starts SecantusDB on a free loopback port (a fresh data directory), fills it like a month of use
(`--users` users with `--entries` request-log entries each this month and last month, one ledger
document per user and month, one user with `--heavy` entries this month, `--users` accounts),
then times the service code itself (usage-service's ActivityReports, auth-service's
UserRepository), each read repeated and the median and worst shown. Also the request log's insert
with and without the `period_user` index the reports need, interleaved in rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auth_service.repository import UserRepository
from auth_service.security import issue_api_key
from infergate_common.billing import RequestStatus
from infergate_common.validation import Plan
from infergate_devstack.components.datastores import mongo_uri, scratch_mongo
from infergate_devstack.install import ensure_secantus
from infergate_devstack.ports import free_ports
from pymongo import AsyncMongoClient
from usage_service.activity import ActivityReports
from usage_service.documents import Document, log_fields, new_usage
from usage_service.periods import current_period, usage_key
from usage_service.request_log import RequestLogRepository
from usage_service.schemas import RequestLogEntry

STATUSES = [RequestStatus.SUCCESS] * 8 + [RequestStatus.RATE_LIMITED, RequestStatus.TIMEOUT]


def entry(user: str, at: datetime, rng: random.Random) -> Document:
    status = rng.choice(STATUSES)
    tokens = 12 if status is RequestStatus.SUCCESS else 0
    logged = RequestLogEntry(
        request_id=uuid.uuid4().hex,
        user_id=user,
        period=current_period(at),
        model="llama3",
        prompt_tokens=7 if tokens else 0,
        completion_tokens=5 if tokens else 0,
        tokens_used=tokens,
        response_time_ms=3.0,
        status=status,
        created_at=at,
    )
    return {"_id": uuid.uuid4().hex, **log_fields(logged)}


async def fill(db: Any, users: list[str], *, entries: int, heavy: int, now: datetime) -> None:
    rng = random.Random(7)
    last_month = now.replace(day=1) - timedelta(days=1)
    months = [(now, now.day), (last_month, last_month.day)]
    docs: list[Document] = []
    for moment, days in months:
        for user in users:
            for _ in range(entries):
                at = moment.replace(day=rng.randint(1, days), hour=rng.randint(0, 23))
                docs.append(entry(user, min(at, now), rng))
        ledger = [
            {
                **new_usage(
                    usage_key(u, current_period(moment)),
                    user_id=u,
                    period=current_period(moment),
                    limit=5000,
                    now=moment,
                ),
                "usedTokens": 12 * rng.randint(0, entries),
            }
            for u in users
        ]
        await db["usage"].insert_many(ledger)
    docs += [entry(users[0], now - timedelta(minutes=i), rng) for i in range(heavy)]
    for start in range(0, len(docs), 1000):
        await db["requestlogs"].insert_many(docs[start : start + 1000], ordered=False)


async def timed(label: str, call: Callable[[], Awaitable[object]], runs: int) -> None:
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        took.append((time.perf_counter() - started) * 1000)
    print(f"{label:<58} median {statistics.median(took):8.1f} ms   worst {max(took):8.1f} ms")


async def insert_cost(logs: Any, user: str, *, rounds: int, per_round: int, bulk: int) -> None:
    """ms per request-log entry, with and without `period_user`, rounds interleaved: one insert
    at a time, and in bulks of `bulk` (as the group commit writes them under load)."""
    rng = random.Random(3)
    took: dict[tuple[bool, int], list[float]] = {}
    for _ in range(rounds):
        for indexed in (False, True):
            if indexed:
                await logs.create_index([("period", 1), ("userId", 1)], name="period_user")
            else:
                await logs.drop_index("period_user")
            for size in (1, bulk):
                started = time.perf_counter()
                for _ in range(per_round // size):
                    batch = [entry(user, datetime.now(UTC), rng) for _ in range(size)]
                    await logs.insert_many(batch)
                each = (time.perf_counter() - started) * 1000 / (per_round // size * size)
                took.setdefault((indexed, size), []).append(each)
    for (indexed, size), runs in sorted(took.items(), key=lambda item: item[0][::-1]):
        label = f"{'with' if indexed else 'without'} period_user, bulks of {size}"
        print(f"request-log insert {label:<37} median {statistics.median(runs):.2f} ms/entry")


async def run(uri: str, args: argparse.Namespace) -> None:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    usage_db, auth_db = client["bench-usage"], client["bench-auth"]
    logs = RequestLogRepository(usage_db["requestlogs"])
    await logs.ensure_indexes()
    now = datetime.now(UTC)
    users = [uuid.uuid4().hex[:24] for _ in range(args.users)]
    started = time.perf_counter()
    await fill(usage_db, users, entries=args.entries, heavy=args.heavy, now=now)
    accounts = UserRepository(auth_db["users"])
    await accounts.ensure_indexes()
    for n in range(args.users):
        await accounts.create(email=f"user{n:05d}@example.com", key=issue_api_key(), plan=Plan.FREE)
    print(
        f"filled in {time.perf_counter() - started:.0f} s: {args.users} users, {args.entries} "
        f"entries each this month and last, {args.heavy} more for one user this month"
    )
    reports = ActivityReports(logs=usage_db["requestlogs"], usage=usage_db["usage"])
    period = current_period(now)
    pick = random.Random(5)
    await timed(
        "one user's days (a typical user)",
        lambda: reports.daily(period=period, user_id=pick.choice(users[1:])),
        runs=50,
    )
    await timed(
        f"one user's days (the user with {args.heavy} entries)",
        lambda: reports.daily(period=period, user_id=users[0]),
        runs=10,
    )
    await timed("everyone's days (the month's entries)", lambda: reports.daily(period=period), 5)
    await timed("top 10 users (ledger + their request counts)", lambda: _top(reports, period), 5)
    for prefix, label in (("", "all"), ("user019", "10 match"), ("user01", "100 match")):
        await timed(
            f"users: a page of 20 by email, search {prefix!r} ({label})",
            functools.partial(accounts.search, prefix, limit=21),
            runs=10,
        )
    await insert_cost(usage_db["requestlogs"], users[1], rounds=8, per_round=160, bulk=16)
    await client.close()


async def _top(reports: ActivityReports, period: str) -> None:
    await reports.top_users(period=period, limit=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--entries", type=int, default=5)
    parser.add_argument("--heavy", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        root = Path(tmp)
        (port,) = free_ports(1)
        server = scratch_mongo(ensure_secantus(print), root, port)
        server.spawn()
        try:
            server.wait_ready()
            asyncio.run(run(mongo_uri(port), args))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
