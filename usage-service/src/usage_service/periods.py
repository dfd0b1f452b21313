"""Calendar months (UTC) as quota periods."""

from __future__ import annotations

from datetime import UTC, datetime


def current_period(now: datetime | None = None) -> str:
    """The quota period containing `now`: "YYYY-MM" in UTC."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


def usage_key(user_id: str, period: str) -> str:
    return f"{user_id}:{period}"
