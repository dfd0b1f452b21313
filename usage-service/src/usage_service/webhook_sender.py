"""One delivery attempt: the HTTP client that makes it, and what came of it.

A fresh connection and a DNS answer checked by the policy's resolver for every attempt (see
webhook_urls), no redirect followed, no proxy taken from the environment, the whole attempt
bounded by QUOTA_WEBHOOK_TIMEOUT_SECONDS. The answer's body is never read.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import aiohttp
from infergate_common.webhooks import Attempt

from usage_service.config import Settings
from usage_service.webhook_urls import (
    AddressPolicy,
    AddressRefusedError,
    GuardedResolver,
    RefusedUrlError,
    check_destination,
    parse_url,
)


class WebhookSender:
    """One attempt: POST the body, and what came of it (never raises for the receiver's sake)."""

    def __init__(
        self, session: aiohttp.ClientSession, *, policy: AddressPolicy, timeout_s: float
    ) -> None:
        self._session = session
        self._policy = policy
        self._timeout_s = timeout_s

    async def post(self, url: str, *, body: bytes, headers: dict[str, str]) -> Attempt:
        at, started = datetime.now(UTC), time.perf_counter()
        status, error = None, None
        try:
            check_destination(parse_url(url), self._policy)
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except RefusedUrlError as exc:
            error = exc.message
        except TimeoutError:
            error = f"no answer within {self._timeout_s:g} s"
        except aiohttp.ClientConnectorDNSError as exc:
            refused = isinstance(exc.os_error, AddressRefusedError)
            error = str(exc.os_error) if refused else "the host could not be resolved"
        except aiohttp.ClientConnectorError:
            error = "the connection failed"
        except aiohttp.ClientError as exc:  # the answer was cut off, malformed, ...
            error = f"the request failed ({type(exc).__name__})"
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        return Attempt(at=at, status_code=status, error=error, duration_ms=duration_ms)


def open_sender(settings: Settings, stack: AsyncExitStack) -> WebhookSender:
    """A sender whose client is closed with the stack."""
    policy, timeout_s = settings.webhook_policy, settings.quota_webhook_timeout_seconds
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            resolver=GuardedResolver(policy), use_dns_cache=False, force_close=True
        ),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    )
    stack.push_async_callback(session.close)
    return WebhookSender(session, policy=policy, timeout_s=timeout_s)
