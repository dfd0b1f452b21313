"""Usage over time, aggregated in the database: per day (one user's, or everyone's) from the
request log, and a month's top users from the ledger.

Per day: one aggregation pipeline, `$match` on the month (and the user) served by the request
log's `period_user` index, then `$group` by the UTC day of `createdAt`; days without entries are
filled in here. Top users: the month's ledger documents sorted by `usedTokens` (the ledger is the
exact figure: a settlement that charges writes it), then the request counts of just those users,
from the log by the same index. The ledger has no index for this on purpose: SecantusDB rewrites
every index entry of a document on each update, and reservations and settlements update it on
every chat (see usage_repository); this read is an operator's, now and then.

Measured on SecantusDB 0.7.0b3 (`uv run --frozen python -m bench.console_aggregations`; the
figures are in bench/README.md): one user's month stays about a millisecond whatever the number
of users; everyone's month and the top users grow with the month's entries and ledger documents.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime

from infergate_common.billing import RequestStatus
from infergate_common.usage_reports import (
    ERROR_STATUSES,
    REFUSED_STATUSES,
    DailyUsage,
    DayOfUsage,
    TopUser,
    TopUsers,
)
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from usage_service.documents import Document
from usage_service.periods import current_period, days_so_far

Clock = Callable[[], datetime]
_DAY = {"$dateToString": {"format": "%Y-%m-%d", "date": "$createdAt"}}  # UTC
# By day and status: which statuses are errors is decided here, on the few rows this gives
# (SecantusDB took 750 ms for a $cond per document on 10,000 entries, 430 ms without).
_BY_DAY_AND_STATUS = {
    "$group": {
        "_id": {"day": _DAY, "status": "$status"},
        "requests": {"$sum": 1},
        "tokens": {"$sum": "$tokensUsed"},
    }
}


def _day_of_usage(day: date, rows: list[Document]) -> DayOfUsage:
    """One day's figures from its rows (one per status seen that day)."""

    def count(statuses: frozenset[RequestStatus]) -> int:
        return sum(row["requests"] for row in rows if row["_id"]["status"] in statuses)

    return DayOfUsage(
        date=day,
        requests=sum(row["requests"] for row in rows),
        tokens=sum(row["tokens"] for row in rows),
        errors=count(ERROR_STATUSES),
        refused=count(REFUSED_STATUSES),
    )


class ActivityReports:
    def __init__(
        self,
        *,
        logs: AsyncCollection[Document],
        usage: AsyncCollection[Document],
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self._logs = logs
        self._usage = usage
        self._clock = clock

    async def daily(self, *, period: str | None, user_id: str | None = None) -> DailyUsage:
        """Each day of the month (by default this one) so far: everyone's entries, or only
        `user_id`'s."""
        period = period or current_period(self._clock())
        match: Document = {"period": period}
        if user_id is not None:
            match["userId"] = user_id
        cursor = await self._logs.aggregate([{"$match": match}, _BY_DAY_AND_STATUS])
        by_day: dict[str, list[Document]] = defaultdict(list)
        async for row in cursor:
            by_day[row["_id"]["day"]].append(row)
        today = self._clock().date()
        days = [_day_of_usage(day, by_day[day.isoformat()]) for day in days_so_far(period, today)]
        return DailyUsage(period=period, days=days)

    async def top_users(self, *, period: str | None, limit: int) -> TopUsers:
        """The `limit` users who were charged the most tokens in the month (by default this
        one), most first."""
        period = period or current_period(self._clock())
        leaders = await self._usage.find(
            {"period": period, "usedTokens": {"$gt": 0}},
            {"userId": 1, "usedTokens": 1},
            sort=[("usedTokens", DESCENDING), ("userId", ASCENDING)],
            limit=limit,
        ).to_list()
        requests = await self._requests_of([d["userId"] for d in leaders], period=period)
        return TopUsers(
            period=period,
            data=[
                TopUser(
                    user_id=d["userId"],
                    tokens=d["usedTokens"],
                    requests=requests.get(d["userId"], 0),
                )
                for d in leaders
            ],
        )

    async def _requests_of(self, user_ids: list[str], *, period: str) -> dict[str, int]:
        if not user_ids:
            return {}
        cursor = await self._logs.aggregate(
            [
                {"$match": {"period": period, "userId": {"$in": user_ids}}},
                {"$group": {"_id": "$userId", "requests": {"$sum": 1}}},
            ]
        )
        return {row["_id"]: row["requests"] async for row in cursor}
