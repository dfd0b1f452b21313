"""Typed clients of the internal services (their failures are translated in the base class)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

from infergate_common.http_client import InternalServiceClient
from infergate_common.validation import Plan

from api_gateway.schemas import Generation, ModelCall, MonthlyUsage, Reservation, VerifiedUser


class AuthClient(InternalServiceClient):
    service = "auth-service"

    async def register(self, email: str) -> tuple[str, Plan]:
        body = await self.call("POST", "/auth/register", json={"email": email})
        return str(body["apiKey"]), Plan(body["plan"])

    async def verify(self, api_key: str) -> VerifiedUser:
        body = await self.call("POST", "/auth/verify", json={"apiKey": api_key})
        return VerifiedUser.model_validate(body)


class UsageClient(InternalServiceClient):
    service = "usage-service"

    async def reserve(
        self, *, request_id: str, user: VerifiedUser, tokens: int, model: str
    ) -> Reservation:
        body = await self.call(
            "POST",
            "/usage/reserve",
            json={
                "requestId": request_id,
                "userId": user.userId,
                "plan": user.plan.value,
                "tokens": tokens,
                "model": model,
            },
        )
        return Reservation.model_validate(body)

    async def settle(self, payload: dict[str, object]) -> MonthlyUsage:
        return MonthlyUsage.model_validate(await self.call("POST", "/usage/settle", json=payload))

    async def log_attempt(self, payload: dict[str, object]) -> None:
        await self.call("POST", "/usage/attempts", json=payload)

    async def monthly(self, user: VerifiedUser) -> MonthlyUsage:
        body = await self.call("GET", f"/usage/{user.userId}", params={"plan": user.plan.value})
        return MonthlyUsage.model_validate(body)


class AiClient(InternalServiceClient):
    service = "ai-service"
    timeout_message = "AI service timeout"

    async def generate(self, spec: ModelCall) -> Generation:
        body = await self.call("POST", "/ai/generate", json=spec.payload(stream=False))
        return Generation.model_validate(body)

    async def models(self) -> list[str]:
        body = await self.call("GET", "/ai/models")
        return [str(name) for name in body["models"]]

    def stream(self, spec: ModelCall) -> AbstractAsyncContextManager[AsyncIterator[Any]]:
        """The model's NDJSON events: delta, then done or error."""
        return self.stream_lines("/ai/generate", json=spec.payload(stream=True))
