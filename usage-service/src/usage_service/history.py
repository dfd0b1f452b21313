"""Pages of one user's request log, newest first, for the gateway's admin API."""

from __future__ import annotations

from usage_service.cursors import decode_cursor, encode_cursor
from usage_service.request_log import RequestLogRepository
from usage_service.schemas import RequestHistory, RequestHistoryItem


async def history_page(
    logs: RequestLogRepository, *, user_id: str, limit: int, before: str | None
) -> RequestHistory:
    """Up to `limit` entries older than the `before` cursor, and the cursor of the next page."""
    position = None if before is None else decode_cursor(before)
    documents = await logs.history(user_id=user_id, limit=limit + 1, before=position)
    page = documents[:limit]
    items = [
        RequestHistoryItem(
            requestId=d["requestId"],
            model=d["model"],
            status=d["status"],
            period=d.get("period"),
            promptTokens=d["promptTokens"],
            completionTokens=d["completionTokens"],
            tokensUsed=d["tokensUsed"],
            responseTimeMs=d["responseTimeMs"],
            createdAt=d["createdAt"],
        )
        for d in page
    ]
    more = len(documents) > limit
    next_cursor = encode_cursor(page[-1]["createdAt"], page[-1]["_id"]) if more else None
    return RequestHistory(data=items, nextCursor=next_cursor)
