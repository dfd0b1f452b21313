"""Calendar months (UTC) as quota periods, and the ledger's key for one user's month."""

from __future__ import annotations

from datetime import UTC, datetime

from infergate_common.billing import period_of


def current_period(now: datetime | None = None) -> str:
    """The quota period containing `now`: "YYYY-MM" in UTC."""
    return period_of(now or datetime.now(UTC))


def usage_key(user_id: str, period: str) -> str:
    return f"{user_id}:{period}"
