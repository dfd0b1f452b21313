"""Opaque page cursors of the request log: the (createdAt, _id) of the last entry shown.

Entries are listed newest first, ordered by createdAt then _id, so a cursor names an exact
position even when many entries share a millisecond; entries written after the first page do not
shift later pages.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta

from infergate_common.errors import BadRequestError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# The last millisecond a datetime holds (9999-12-31T23:59:59.999Z): past it, no entry can be.
_LAST_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - _EPOCH) // _MS
_POSITION = re.compile(r"(\d{1,15}):([A-Za-z0-9_-]{1,64})")


def encode_cursor(created_at: datetime, entry_id: str) -> str:
    moment = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    millis = (moment - _EPOCH) // _MS  # exact: stored times have millisecond precision
    return base64.urlsafe_b64encode(f"{millis}:{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor names; 400 for anything this module did not make."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    match = _POSITION.fullmatch(raw)
    if match is None or int(match[1]) > _LAST_MS:
        raise BadRequestError("Invalid cursor", code="invalid_cursor")
    return _EPOCH + int(match[1]) * _MS, match[2]
