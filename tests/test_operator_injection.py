"""Query-operator objects (`{"$ne": null}`, ...) in every field of every route, public (through
nginx) and internal (with the token): each is a 400, so no operator can reach a MongoDB query.
The valid bodies they are put into are checked to succeed, so each 400 is the operator's doing."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from infergate_devstack.stack import Stack

from tests.fake_ollama_fixtures import FakeOllamaControl
from tests.helpers import reservation_wire, settlement_wire

OPERATORS: list[Any] = [{"$ne": None}, {"$gt": ""}, {"$where": "sleep(1000)"}, {"$regex": ".*"}]
USER = {"role": "user", "content": "hi"}


@dataclass(frozen=True)
class Route:
    service: str  # "public" (through nginx with an API key) or an internal service
    path: str
    fields: tuple[str, ...]


ROUTES = {
    "register": Route("public", "/v1/register", ("email",)),
    "chat": Route("public", "/v1/chat", ("prompt", "model", "stream")),
    "completions": Route(
        "public",
        "/v1/chat/completions",
        (
            "model", "messages", "messages.0", "messages.0.role", "messages.0.content",
            "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop",
            "stop.0", "stream", "stream_options.include_usage", "n",
        ),
    ),
    "auth-register": Route("auth", "/auth/register", ("email",)),
    "auth-verify": Route("auth", "/auth/verify", ("apiKey",)),
    "usage-reserve": Route(
        "usage",
        "/usage/reserve",
        (
            "reservationId", "requestId", "userId", "plan", "tokens", "minTokens",
            "holdSeconds", "model", "startedAt",
        ),
    ),
    "usage-settle": Route(
        "usage",
        "/usage/settle",
        (
            "reservationId", "requestId", "userId", "plan", "reservedTokens", "promptTokens",
            "completionTokens", "status", "model", "responseTimeMs", "startedAt",
        ),
    ),
    "usage-settlements": Route(
        "usage", "/usage/settlements", ("settlements", "settlements.0", "settlements.0.userId")
    ),
    "usage-attempts": Route(
        "usage",
        "/usage/attempts",
        ("requestId", "userId", "status", "model", "responseTimeMs", "startedAt"),
    ),
    "ai-generate": Route(
        "ai",
        "/ai/generate",
        (
            "messages", "messages.0", "messages.0.role", "messages.0.content", "maxTokens",
            "model", "temperature", "topP", "seed", "stop", "stop.0", "stream",
        ),
    ),
}  # fmt: skip


def with_value(body: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with the dotted `field` (list items by index) set to `value`."""
    changed = copy.deepcopy(body)
    *parents, last = field.split(".")
    target: Any = changed
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return changed


class Caller:
    """Sends bodies to the routes and builds a valid body for each."""

    def __init__(
        self, stack: Stack, api: httpx.AsyncClient, internal: httpx.AsyncClient, key: str
    ) -> None:
        self.stack, self.api, self.internal, self.key = stack, api, internal, key
        self.user_id = ""

    async def send(self, route: Route, body: Any) -> httpx.Response:
        if route.service == "public":
            return await self.api.post(route.path, json=body, headers={"x-api-key": self.key})
        url = self.stack.service_url(route.service) + route.path
        return await self.internal.post(url, json=body)

    async def valid_body(self, name: str) -> dict[str, Any]:
        ids = {"requestId": uuid.uuid4().hex, "userId": self.user_id, "model": "llama3"}
        sampling = {"temperature": 0.5, "seed": 1, "stop": ["zz"], "stream": False}
        bodies: dict[str, dict[str, Any]] = {
            "register": {"email": f"op-{uuid.uuid4().hex}@example.com"},
            "chat": {"prompt": "hi", "model": "llama3", "stream": False},
            "completions": {
                "model": "llama3", "messages": [dict(USER)], "max_tokens": 5,
                "max_completion_tokens": 5, "top_p": 0.5, "n": 1,
                "stream_options": {"include_usage": False}, **sampling,
            },
            "auth-register": {"email": f"op-{uuid.uuid4().hex}@example.com"},
            "auth-verify": {"apiKey": self.key},
            "usage-reserve": reservation_wire(self.user_id, 10),
            "usage-attempts": {
                **ids, "status": "RATE_LIMITED", "responseTimeMs": 5,
                "startedAt": datetime.now(UTC).isoformat(),
            },
            "ai-generate": {"messages": [dict(USER)], "maxTokens": 5, "topP": 0.5, **sampling},
        }  # fmt: skip
        if name == "usage-settle":
            return await self._settle_body()
        if name == "usage-settlements":
            return {"settlements": [await self._settle_body()]}
        return bodies[name]

    async def _settle_body(self) -> dict[str, Any]:
        reservation = reservation_wire(self.user_id, 10)
        held = await self.send(ROUTES["usage-reserve"], reservation)
        assert held.status_code == 201, held.text
        return settlement_wire(reservation, prompt=3, completion=4)


@pytest.fixture
async def caller(
    stack: Stack, api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> AsyncIterator[Caller]:
    headers = {"x-internal-token": stack.internal_token}
    async with httpx.AsyncClient(headers=headers, timeout=10.0) as internal:
        caller = Caller(stack, api, internal, api_key)
        access = await api.get("/test", headers={"x-api-key": api_key})
        caller.user_id = access.json()["user"]["userId"]
        yield caller


@pytest.mark.parametrize("name", list(ROUTES))
async def test_the_valid_bodies_are_accepted(caller: Caller, name: str) -> None:
    response = await caller.send(ROUTES[name], await caller.valid_body(name))
    assert response.status_code in {200, 201}, response.text


@pytest.mark.parametrize(
    ("name", "field"), [(name, field) for name, route in ROUTES.items() for field in route.fields]
)
async def test_an_operator_object_in_any_field_is_400(
    caller: Caller, name: str, field: str
) -> None:
    valid = await caller.valid_body(name)
    for operator in OPERATORS:
        response = await caller.send(ROUTES[name], with_value(valid, field, operator))
        assert response.status_code == 400, (field, operator, response.text)
        assert response.headers["content-type"].startswith("application/json")


async def test_an_operator_in_a_path_or_query_is_400(stack: Stack) -> None:
    headers = {"x-internal-token": stack.internal_token}
    async with httpx.AsyncClient(base_url=stack.service_url("usage"), timeout=10.0) as usage:
        in_path = await usage.get("/usage/" + quote(json.dumps({"$ne": None})), headers=headers)
        in_query = await usage.get(
            "/usage/" + "a" * 24, params={"plan": json.dumps({"$ne": None})}, headers=headers
        )
    assert (in_path.status_code, in_query.status_code) == (400, 400)


async def _all_operator_bodies(url: str, headers: dict[str, str]) -> list[tuple[str, int]]:
    """Every JSON-body operation of the OpenAPI at `url`, each property an operator object."""
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10.0) as client:
        document = (await client.get("/openapi.json")).json()
        schemas = document.get("components", {}).get("schemas", {})
        answers = []
        for path, item in document["paths"].items():
            for method, operation in item.items():
                ref = (
                    operation.get("requestBody", {})
                    .get("content", {})
                    .get("application/json", {})
                    .get("schema", {})
                    .get("$ref", "")
                )
                properties = schemas.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
                if not properties:
                    continue
                body = {name: {"$ne": None} for name in properties}
                concrete = re.sub(r"\{[^}]+\}", "a" * 24, path)
                response = await client.request(method, concrete, json=body)
                answers.append((f"{method.upper()} {path}", response.status_code))
    return answers


async def test_operators_in_every_body_of_every_openapi_are_refused(
    stack: Stack, api_key: str
) -> None:
    """A safety net for routes added later: each service's OpenAPI, all properties at once."""
    answers = await _all_operator_bodies(stack.public_url, {"x-api-key": api_key})
    for service in ("auth", "usage", "ai"):
        token = {"x-internal-token": stack.internal_token}
        answers += await _all_operator_bodies(stack.service_url(service), token)
    assert len(answers) >= 8
    assert [(op, status) for op, status in answers if not 400 <= status < 500] == []
