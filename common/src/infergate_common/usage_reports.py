"""Usage reports: what usage-service aggregates from its request log and its ledger, and the
gateway passes on as it is (one owner for the shapes and for what counts as an error).

How a logged attempt counts in a day (`RequestStatus`):
* every attempt is one of the day's `requests`, and adds the tokens it was charged (`tokens`);
* `errors`: the service failed the user: the model or a service timed out or failed (TIMEOUT,
  UPSTREAM_ERROR), a stream was cut off without its outcome (INTERRUPTED), a chat was never
  settled in time (EXPIRED);
* `refused`: the user's own limits said no (RATE_LIMITED, QUOTA_EXCEEDED): 429 and 403 answers,
  not failures of the service, so they do not raise the error rate;
* neither: SUCCESS, and CANCELLED (the client went away).
The error rate of a day is `errors / requests`; of the requests the service accepted,
`errors / (requests - refused)`.
"""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from infergate_common.billing import RequestStatus, WireModel

ERROR_STATUSES = frozenset(
    {
        RequestStatus.TIMEOUT,
        RequestStatus.UPSTREAM_ERROR,
        RequestStatus.INTERRUPTED,
        RequestStatus.EXPIRED,
    }
)
REFUSED_STATUSES = frozenset({RequestStatus.RATE_LIMITED, RequestStatus.QUOTA_EXCEEDED})


class DayOfUsage(WireModel):
    date: dt.date = Field(description="The day (UTC), YYYY-MM-DD.")
    requests: int = Field(description="Chat attempts started that day, whatever their outcome.")
    tokens: int = Field(description="Tokens charged for them.")
    errors: int = Field(
        description="Attempts the service failed: timeouts, model or service errors, streams "
        "cut off, chats never settled (TIMEOUT, UPSTREAM_ERROR, INTERRUPTED, EXPIRED)."
    )
    refused: int = Field(
        description="Attempts refused by the rate limit or the monthly quota (RATE_LIMITED, "
        "QUOTA_EXCEEDED): not errors."
    )


class DailyUsage(WireModel):
    period: str = Field(description="The calendar month (UTC), YYYY-MM.")
    days: list[DayOfUsage] = Field(
        description="Every day of the month, oldest first, zero-filled: up to today for the "
        "current month, all of it for a past one, none for a future one."
    )


class TopUser(WireModel):
    user_id: str
    tokens: int = Field(description="Tokens charged this month (the ledger's figure).")
    requests: int = Field(description="Chat attempts logged this month, whatever their outcome.")


class TopUsers(WireModel):
    period: str = Field(description="The calendar month (UTC), YYYY-MM.")
    data: list[TopUser] = Field(
        description="The users who used the most tokens, most first (ties by user id); users "
        "who used none are left out."
    )
