"""Calendar months (UTC) as quota periods, and the ledger's key for one user's month."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime

from infergate_common.billing import period_of


def current_period(now: datetime | None = None) -> str:
    """The quota period containing `now`: "YYYY-MM" in UTC."""
    return period_of(now or datetime.now(UTC))


def usage_key(user_id: str, period: str) -> str:
    return f"{user_id}:{period}"


def days_so_far(period: str, today: date) -> list[date]:
    """The days of `period` ("YYYY-MM") up to `today`: all of a past month, none of a future one."""
    year, month = (int(part) for part in period.split("-"))
    last = calendar.monthrange(year, month)[1]
    if (year, month) == (today.year, today.month):
        last = today.day
    elif (year, month) > (today.year, today.month):
        last = 0
    return [date(year, month, day) for day in range(1, last + 1)]
