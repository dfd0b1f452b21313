"""Typed clients of the internal services (their failures are translated in the base class)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from infergate_common.billing import (
    AttemptLog,
    RequestStatus,
    Reservation,
    ReservationRequest,
    Settlement,
    SettlementBatch,
    SettlementResult,
    SettlementResults,
)
from infergate_common.http_client import InternalServiceClient
from infergate_common.usage_reports import DailyUsage, TopUsers
from infergate_common.validation import Plan

from api_gateway.admin_schemas import AdminUser, AdminUserList, MonthOfUsage, RequestHistory
from api_gateway.key_cache import CachedKey
from api_gateway.schemas import (
    Generation,
    IssuedKey,
    ModelCall,
    MonthlyUsage,
    RotatedKey,
    ServedModel,
    VerifiedUser,
)


class AuthClient(InternalServiceClient):
    service = "auth-service"

    async def register(self, email: str, *, idempotency_key: str | None) -> tuple[str, Plan]:
        payload = {"email": email, **_idempotent(idempotency_key)}
        body = await self.call("POST", "/auth/register", json=payload)
        return str(body["apiKey"]), Plan(body["plan"])

    async def verify(self, api_key: str) -> CachedKey:
        """The key's user, and the user's version the verification saw."""
        body = await self.call("POST", "/auth/verify", json={"apiKey": api_key})
        return CachedKey(VerifiedUser.model_validate(body), int(body["version"]))

    async def rotate(
        self, api_key: str, *, idempotency_key: str | None
    ) -> tuple[UserChange, RotatedKey]:
        """Replace the key; the change (user id, new version) and the new key."""
        payload = {"apiKey": api_key, **_idempotent(idempotency_key)}
        body = await self.call("POST", "/auth/keys/rotate", json=payload)
        return _change(body), RotatedKey(apiKey=body["apiKey"], plan=body["plan"])

    async def issue_key(self, user_id: str) -> tuple[UserChange, IssuedKey]:
        """A new key for the user, whatever their current one (an operator's re-issue)."""
        body = await self.call("POST", f"/auth/users/{user_id}/key")
        return _change(body), IssuedKey(userId=user_id, apiKey=body["apiKey"], plan=body["plan"])

    async def changes(self, *, since_ms: int) -> tuple[list[UserChange], int]:
        """Key and plan changes stamped since `since_ms`, and where to continue from."""
        body = await self.call("GET", "/auth/changes", params={"since": str(since_ms)})
        return [_change(c) for c in body["changes"]], int(body["until"])

    async def revoke(self, api_key: str) -> UserChange:
        """Revoke the key; the change (user id, new version)."""
        return _change(await self.call("POST", "/auth/keys/revoke", json={"apiKey": api_key}))

    async def user(self, user_id: str) -> AdminUser:
        return AdminUser.model_validate(await self.call("GET", f"/auth/users/{user_id}"))

    async def users_by_email(self, email: str) -> list[AdminUser]:
        body = await self.call("GET", "/auth/users", params={"email": email})
        return [AdminUser.model_validate(user) for user in body["data"]]

    async def search_users(self, text: str, *, limit: int, cursor: str | None) -> AdminUserList:
        """A page of the users whose email starts with `text` (any case), by email."""
        params = {"search": text, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        return AdminUserList.model_validate(await self.call("GET", "/auth/users", params=params))

    async def set_plan(self, user_id: str, plan: Plan) -> tuple[UserChange, AdminUser]:
        body = await self.call("PUT", f"/auth/users/{user_id}/plan", json={"plan": plan.value})
        return _change(body), AdminUser.model_validate(body)

    async def revoke_key_of(self, user_id: str) -> UserChange:
        """Revoke the user's key, whatever it is (an operator's); the change."""
        return _change(await self.call("DELETE", f"/auth/users/{user_id}/key"))


@dataclass(frozen=True, slots=True)
class UserChange:
    """A change of what a user's key verifies to, and the user's version after it."""

    user_id: str
    version: int


def _change(body: dict[str, Any]) -> UserChange:
    return UserChange(str(body["userId"]), int(body["version"]))


def _idempotent(idempotency_key: str | None) -> dict[str, str]:
    return {} if idempotency_key is None else {"idempotencyKey": idempotency_key}


class UsageClient(InternalServiceClient):
    """Every call about one user goes to the usage-service replica of that user (while it is
    up), whose quota hints then hold: a reservation is one round trip there, not two."""

    service = "usage-service"

    async def reserve(self, request: ReservationRequest) -> Reservation:
        body = await self.call(
            "POST", "/usage/reserve", json=request.wire(), affinity=request.user_id
        )
        return Reservation.model_validate(body)

    async def settle_many(self, settlements: list[Settlement]) -> list[SettlementResult]:
        """One batch per replica, sent together (each settlement to its user's replica)."""
        batches: dict[int, list[Settlement]] = defaultdict(list)
        for settlement in settlements:
            batches[self.route(settlement.user_id)].append(settlement)
        answers = await asyncio.gather(*(self._settle_batch(batch) for batch in batches.values()))
        return [result for answer in answers for result in answer]

    async def _settle_batch(self, settlements: list[Settlement]) -> list[SettlementResult]:
        batch = SettlementBatch(settlements=settlements)
        body = await self.call(
            "POST", "/usage/settlements", json=batch.wire(), affinity=settlements[0].user_id
        )
        return SettlementResults.model_validate(body).results

    async def log_attempt(
        self,
        *,
        request_id: str,
        user_id: str,
        model: str,
        response_time_ms: float,
        started_at: datetime,
        status: RequestStatus = RequestStatus.RATE_LIMITED,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """Log a chat that never reached a reservation: rate limited, or a free cache hit (with
        the counts of the answer it repeated)."""
        attempt = AttemptLog(
            request_id=request_id,
            user_id=user_id,
            status=status,
            model=model,
            response_time_ms=response_time_ms,
            started_at=started_at,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        await self.call("POST", "/usage/attempts", json=attempt.wire(), affinity=user_id)

    async def monthly(self, user: VerifiedUser) -> MonthlyUsage:
        return await self.month_of(user.userId, user.plan)

    async def month_of(self, user_id: str, plan: Plan) -> MonthOfUsage:
        body = await self.call(
            "GET", f"/usage/{user_id}", params={"plan": plan.value}, affinity=user_id
        )
        return MonthOfUsage.model_validate(body)

    async def set_plan(self, user_id: str, plan: Plan) -> MonthOfUsage:
        body = await self.call(
            "PUT", f"/usage/{user_id}/plan", json={"plan": plan.value}, affinity=user_id
        )
        return MonthOfUsage.model_validate(body)

    async def history(self, user_id: str, *, limit: int, before: str | None) -> RequestHistory:
        params = {"limit": str(limit), **({"before": before} if before else {})}
        body = await self.call("GET", f"/usage/{user_id}/requests", params=params)
        return RequestHistory.model_validate(body)

    async def daily(self, user_id: str, *, period: str | None) -> DailyUsage:
        """One user's usage per day of the month (this one by default)."""
        body = await self.call(
            "GET", f"/usage/{user_id}/daily", params=_period(period), affinity=user_id
        )
        return DailyUsage.model_validate(body)

    async def daily_totals(self, *, period: str | None) -> DailyUsage:
        """Every user's usage per day of the month (this one by default)."""
        return DailyUsage.model_validate(
            await self.call("GET", "/usage/daily", params=_period(period))
        )

    async def top_users(self, *, period: str | None, limit: int) -> TopUsers:
        params = {**_period(period), "limit": str(limit)}
        return TopUsers.model_validate(await self.call("GET", "/usage/top", params=params))


def _period(period: str | None) -> dict[str, str]:
    return {} if period is None else {"period": period}


class AiClient(InternalServiceClient):
    service = "ai-service"
    timeout_message = "AI service timeout"

    async def generate(self, spec: ModelCall) -> Generation:
        body = await self.call("POST", "/ai/generate", json=spec.payload(stream=False))
        return Generation.model_validate(body)

    async def models(self) -> list[ServedModel]:
        """The LLM server's models, with what it says about each (when ai-service tells)."""
        body = await self.call("GET", "/ai/models")
        described = {
            str(item["name"]): ServedModel.model_validate(item) for item in body.get("details", [])
        }
        return [described.get(str(name), ServedModel(name=str(name))) for name in body["models"]]

    def stream(self, spec: ModelCall) -> AbstractAsyncContextManager[AsyncIterator[Any]]:
        """The model's NDJSON events: delta, then done or error."""
        return self.stream_lines("/ai/generate", json=spec.payload(stream=True))
