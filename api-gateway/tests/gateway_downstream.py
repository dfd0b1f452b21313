"""Scriptable stand-ins for auth, usage and ai at the HTTP edge (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import httpx
from api_gateway.config import Settings
from pydantic import SecretStr

TOKEN = "unit-test-internal-token-0123456789"
USER_ID = "a" * 24
VALID_KEY = "sk_" + "V" * 43  # the exact form of a key: anything else is refused unasked
OTHER_KEY = "sk_" + "O" * 43  # well formed, unknown to auth-service

# ai-service's last NDJSON event of a streamed answer (after the deltas).
DONE = {
    "type": "done",
    "tokens": 9,
    "promptTokens": 6,
    "completionTokens": 3,
    "model": "llama3",
    "doneReason": "stop",
}

Reply = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]
# The `open_gateway` fixture: a gateway on these stand-ins, with settings overridden.
Opener = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@dataclass
class Call:
    service: str
    path: str
    headers: httpx.Headers
    body: Any


@dataclass
class Downstream:
    """Records every internal call; answers like healthy services unless told otherwise."""

    calls: list[Call] = field(default_factory=list)
    overrides: dict[tuple[str, str], Reply] = field(default_factory=dict)
    generation: dict[str, Any] = field(
        default_factory=lambda: {
            "output": "Hi!",
            "promptTokens": 9,
            "completionTokens": 3,
            "model": "llama3",
            "doneReason": "stop",
        }
    )

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def override(self, service: str, path: str, reply: Reply) -> None:
        self.overrides[(service, path)] = reply

    def paths(self, service: str) -> list[str]:
        return [call.path for call in self.calls if call.service == service]

    def bodies(self, service: str, path: str) -> list[Any]:
        return [c.body for c in self.calls if c.service == service and c.path == path]

    def settlements(self) -> list[Any]:
        """Every settlement sent to usage-service so far (in batches, or one by one)."""
        batches = self.bodies("usage", "/usage/settlements")
        return [s for batch in batches for s in batch["settlements"]]

    async def settled(self, count: int = 1, *, timeout_s: float = 5.0) -> list[Any]:
        """The settlements sent, once there are at least `count`: they are delivered after the
        answer, in the background."""
        deadline = time.monotonic() + timeout_s
        while len(self.settlements()) < count:
            assert time.monotonic() < deadline, f"settlements so far: {self.settlements()}"
            await asyncio.sleep(0.01)
        return self.settlements()

    def answer(self, service: str, path: str, request: httpx.Request) -> httpx.Response:
        """What a healthy service answers (for an override that only delays or inspects)."""
        return self._default(
            service, path, json.loads(request.content) if request.content else None
        )

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        service = request.url.host.split(".")[0]
        path = request.url.path
        body = json.loads(request.content) if request.content else None
        self.calls.append(Call(service, path, request.headers, body))
        override = self.overrides.get((service, path))
        if override is None:
            return self._default(service, path, body)
        reply = override(request)
        return await reply if inspect.isawaitable(reply) else reply

    def _default(self, service: str, path: str, body: Any) -> httpx.Response:
        if path == "/readyz":
            return httpx.Response(200, json={"status": "ready"})
        if (service, path) == ("auth", "/auth/verify"):
            if body["apiKey"] != VALID_KEY:
                return httpx.Response(
                    401, json={"message": "Invalid API key", "code": "invalid_api_key"}
                )
            return httpx.Response(
                200, json={"valid": True, "userId": USER_ID, "plan": "FREE", "version": 0}
            )
        if (service, path) == ("auth", "/auth/register"):
            return httpx.Response(
                201,
                json={
                    "message": "ok",
                    "userId": USER_ID,
                    "apiKey": "sk_" + "N" * 43,
                    "plan": "FREE",
                },
            )
        if (service, path) == ("usage", "/usage/reserve"):
            return reservation(body)
        if (service, path) == ("usage", "/usage/settlements"):
            results = [
                {
                    "reservationId": s["reservationId"],
                    "outcome": "settled",
                    "chargedTokens": min(
                        s["promptTokens"] + s["completionTokens"], s["reservedTokens"]
                    ),
                }
                for s in body["settlements"]
            ]
            return httpx.Response(200, json={"results": results})
        if service == "usage" and path == f"/usage/{USER_ID}":
            return httpx.Response(
                200,
                json={
                    "userId": USER_ID,
                    "period": "2026-11",
                    "usedTokens": 1250,
                    "reservedTokens": 0,
                    "monthlyTokenLimit": 5000,
                    "remainingTokens": 3750,
                },
            )
        if (service, path) == ("usage", "/usage/attempts"):
            return httpx.Response(201, json={"message": "Logged"})
        if (service, path) == ("ai", "/ai/generate"):
            return httpx.Response(200, json=self.generation)
        return httpx.Response(404, json={"message": "Not found", "code": "not_found"})


def reservation(
    body: Any, *, reserved: int | None = None, remaining: int | None = None
) -> httpx.Response:
    """usage-service granting the reservation `body` asks for: its worst case unless `reserved`,
    out of a month of 5000 that has `remaining` left after it (default: 5000 minus it)."""
    tokens = body["tokens"] if reserved is None else reserved
    return httpx.Response(
        201,
        json={
            "reservationId": body["reservationId"],
            "reservedTokens": tokens,
            "monthlyTokenLimit": 5000,
            "remainingTokens": 5000 - tokens if remaining is None else remaining,
        },
    )


def gateway_settings(redis_port: int, **overrides: Any) -> Settings:
    """Gateway settings whose internal services are the stand-ins above (hosts *.test)."""
    values: dict[str, Any] = {
        "internal_token": SecretStr(TOKEN),
        "auth_service_url": "http://auth.test",
        "usage_service_url": "http://usage.test",
        "ai_service_url": "http://ai.test",
        "redis_port": redis_port,
        "log_format": "json",
    }
    return Settings(**{**values, **overrides})


ADMIN = "unit-test-admin-token-0123456789"
AS_ADMIN = {"authorization": f"Bearer {ADMIN}"}
USER = {
    "userId": USER_ID,
    "email": "ada@example.com",
    "plan": "FREE",
    "keyPrefix": "sk_abcdefg",
    "createdAt": "2026-01-02T03:04:05Z",
    "version": 0,
}
MONTH = {
    "userId": USER_ID,
    "period": "2026-11",
    "usedTokens": 1200,
    "reservedTokens": 300,
    "monthlyTokenLimit": 50000,
    "remainingTokens": 48500,
}


def reply(status: int, body: Any) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(status, json=body)


def settings_for(redis_port: int, **overrides: Any) -> Settings:
    limits: dict[str, Any] = {
        "free_rate_limit": 3,
        "pro_rate_limit": 7,
        "admin_token": SecretStr(ADMIN),
    }
    return gateway_settings(redis_port, **{**limits, **overrides})
