"""A database call whose connection broke is tried once more; a database that is away is not."""

from __future__ import annotations

import pytest
from infergate_common.mongo import once_more_if_cut
from pymongo.errors import AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError


class Flaky:
    """A call that fails with the given errors, in order, then answers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


async def test_a_broken_connection_is_tried_once_more() -> None:
    call = Flaky(AutoReconnect("connection closed"))
    assert await once_more_if_cut(call) == "done"
    assert call.calls == 2


async def test_it_breaking_twice_is_the_callers_to_handle() -> None:
    call = Flaky(AutoReconnect("closed"), AutoReconnect("closed again"))
    with pytest.raises(AutoReconnect):
        await once_more_if_cut(call)
    assert call.calls == 2


@pytest.mark.parametrize(
    "away", [ServerSelectionTimeoutError("no server"), NetworkTimeout("timed out")]
)
async def test_a_database_that_is_away_or_slow_is_not_retried(away: Exception) -> None:
    call = Flaky(away)
    with pytest.raises(type(away)):
        await once_more_if_cut(call)
    assert call.calls == 1
