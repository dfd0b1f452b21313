"""The boundaries, attacked: internal routes through nginx, internal services with wrong tokens,
registration floods from one address, and unknown keys, alone and under concurrency."""

from __future__ import annotations

import asyncio
import hmac
import random
import re
import secrets
import uuid
from typing import Any

import httpx
import pytest
from infergate_common.errors import UnauthorizedError
from infergate_common.internal_auth import internal_token_guard
from infergate_devstack.stack import Stack
from pydantic import SecretStr
from pymongo import AsyncMongoClient

from tests.fake_ollama_fixtures import FakeOllamaControl

INTERNAL = ("auth", "usage", "ai")
HEALTH_PATHS = {"/health", "/healthz", "/readyz"}


async def internal_operations(stack: Stack) -> list[tuple[str, str, str]]:
    """(service, method, concrete path) of every guarded route in each service's OpenAPI."""
    operations = []
    async with httpx.AsyncClient(timeout=10.0) as client:
        for service in INTERNAL:
            document = (await client.get(stack.service_url(service) + "/openapi.json")).json()
            for path, item in document["paths"].items():
                if path in HEALTH_PATHS:
                    continue
                concrete = re.sub(r"\{[^}]+\}", "a" * 24, path)
                operations += [(service, method.upper(), concrete) for method in item]
    assert len(operations) >= 7
    return operations


async def test_no_internal_route_is_reachable_through_nginx(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    """Every internal path, even with the right internal token, and path tricks around it."""
    request_id = f"boundary-{uuid.uuid4().hex}"
    headers = {"x-internal-token": stack.internal_token, "x-request-id": request_id}
    paths = {(method, path) for _, method, path in await internal_operations(stack)}
    tricks = [
        "/v1/../auth/verify",
        "/v1/%2e%2e/auth/verify",
        "/v1/..%2fauth/verify",
        "//auth/verify",
        "/health/../usage/reserve",
        "/AUTH/VERIFY",
        "/auth/verify/",
    ]
    paths |= {("POST", trick) for trick in tricks}
    for method, path in sorted(paths):
        response = await api.request(method, path, json={}, headers=headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "not_found"
    await asyncio.sleep(0.2)  # access lines are written just after answering
    assert [s for s in INTERNAL if request_id in stack.log_path(s).read_text()] == []


def wrong_tokens(token: str) -> list[str | bytes | None]:
    """Missing, empty, shorter, longer, same prefix, one character off, same length."""
    last = "x" if token[-1] != "x" else "y"
    first = "x" if token[0] != "x" else "y"
    swapped = token.swapcase() if token.swapcase() != token else token[::-1]
    return [
        None,
        "",
        token[:1],
        token[:-1],
        token + "x",
        token + token,
        token[:-1] + last,
        first + token[1:],
        swapped,
        "z" * len(token),
        secrets.token_hex(len(token) // 2),
        "tökén-".encode() + token[6:].encode(),  # not ASCII
    ]


async def test_every_internal_route_refuses_a_missing_or_wrong_token(stack: Stack) -> None:
    operations = await internal_operations(stack)
    async with httpx.AsyncClient(timeout=10.0) as client:
        for token in wrong_tokens(stack.internal_token):
            raw = token.encode() if isinstance(token, str) else token
            headers = {} if raw is None else {b"x-internal-token": raw}
            for service, method, path in operations:
                url = stack.service_url(service) + path
                response = await client.request(method, url, json={}, headers=headers)
                assert response.status_code == 401, (service, method, path, token)
                assert response.json()["code"] == "internal_auth_failed"


async def test_the_internal_token_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guard decides with hmac.compare_digest alone, whatever the lengths and prefixes."""
    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # what internal_auth calls
    guard = internal_token_guard(SecretStr("expected-token"))
    for given in ["expected-tokex", "expected-token-longer", "exp", "", None]:
        with pytest.raises(UnauthorizedError):
            await guard(given)
    await guard("expected-token")
    expected = [b"expected-tokex", b"expected-token-longer", b"exp", b"", b"", b"expected-token"]
    assert compared == [(given, b"expected-token") for given in expected]


async def test_concurrent_registrations_from_one_address_stop_at_the_limit(
    strict_stack: Stack,
) -> None:
    """20 at once from an address with a fresh window: exactly REGISTRATION_RATE_LIMIT (5)."""
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    transport = httpx.AsyncHTTPTransport(local_address=address)
    emails = [f"flood-{uuid.uuid4().hex}@example.com" for _ in range(20)]
    async with httpx.AsyncClient(
        base_url=strict_stack.public_url, transport=transport, timeout=10.0
    ) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/register", json={"email": email}) for email in emails)
        )
        other = httpx.AsyncHTTPTransport(local_address=address.rsplit(".", 1)[0] + ".1")
        async with httpx.AsyncClient(base_url=strict_stack.public_url, transport=other) as c2:
            elsewhere = await c2.post("/v1/register", json={"email": f"x-{uuid.uuid4()}@a.io"})
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 5 + [429] * 15, [r.text for r in responses if r.status_code != 201]
    assert all(int(r.headers["retry-after"]) > 0 for r in responses if r.status_code == 429)
    assert elsewhere.status_code == 201  # per address, not global
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(strict_stack.mongo_uri)
    try:
        users = mongo["infergate-auth"]["users"]
        assert await users.count_documents({"email": {"$in": emails}}) == 5
    finally:
        await mongo.close()


def near_misses(key: str) -> list[str]:
    """Well-formed keys one edit away from a real one."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    misses = [key[:-1], key + "A", "sk-" + key[3:], "SK_" + key[3:], key[:3] + key[4:]]
    for position in (3, 10, len(key) // 2, len(key) - 1):
        replacement = next(c for c in alphabet if c != key[position])
        misses.append(key[:position] + replacement + key[position + 1 :])
    return misses


async def test_unknown_keys_never_pass_even_under_concurrency(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    """50 concurrent calls with random and near-miss keys, mixed with 5 valid ones."""
    bad = near_misses(api_key) + [f"sk_{secrets.token_urlsafe(32)}" for _ in range(10)]
    bad = (bad * 4)[:50]
    completion = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}

    def call(key: str, i: int) -> Any:
        kind = i % 4
        if kind == 0:
            return api.post("/v1/chat", json={"prompt": "hi"}, headers={"x-api-key": key})
        if kind == 1:
            bearer = {"authorization": f"Bearer {key}"}
            return api.post("/v1/chat/completions", json=completion, headers=bearer)
        path = "/v1/usage" if kind == 2 else "/test"
        return api.get(path, headers={"x-api-key": key})

    calls_before = (await llm.stats())["chat_calls"]
    valid = [call(api_key, i * 4) for i in range(5)]  # five valid chats
    responses = await asyncio.gather(*(call(key, i) for i, key in enumerate(bad)), *valid)
    refused, accepted = responses[:50], responses[50:]
    assert [r.status_code for r in refused] == [401] * 50
    assert [r.status_code for r in accepted] == [200] * 5
    assert (await llm.stats())["chat_calls"] - calls_before == 5
