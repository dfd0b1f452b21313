"""nginx as the only door: routing, bad input, the internal boundary and the limits."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from infergate_devstack.stack import Stack

from tests.fake_ollama_fixtures import FakeOllamaControl
from tests.helpers import chat, register


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/auth/verify"),
        ("POST", "/auth/register"),
        ("GET", "/usage/" + "a" * 24),
        ("POST", "/usage/reserve"),
        ("POST", "/ai/generate"),
        ("GET", "/metrics"),
        ("GET", "/nothing/here"),
    ],
)
async def test_internal_routes_are_not_reachable_through_nginx(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await api.request(method, path, json={})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert "message" in response.json()


@pytest.mark.parametrize(
    ("service", "method", "path"),
    [
        ("auth", "POST", "/auth/verify"),
        ("usage", "POST", "/usage/reserve"),
        ("usage", "GET", "/usage/" + "a" * 24),
        ("ai", "POST", "/ai/generate"),
    ],
)
@pytest.mark.parametrize("token", [None, "wrong-token-of-enough-length-000"])
async def test_internal_services_refuse_calls_without_the_token(
    stack: Stack, service: str, method: str, path: str, token: str | None
) -> None:
    headers = {} if token is None else {"x-internal-token": token}
    async with httpx.AsyncClient(base_url=stack.service_url(service)) as client:
        response = await client.request(method, path, json={}, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "internal_auth_failed"


async def test_internal_services_accept_the_token(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.service_url("auth")) as client:
        response = await client.post(
            "/auth/verify",
            json={"apiKey": "sk_unknown"},
            headers={"x-internal-token": stack.internal_token},
        )
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"prompt=hello", "application/x-www-form-urlencoded"),
        (b'"just a string"', "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'{"prompt": "\\u0000"}', "application/json"),
        (b"\xff\xfe\xfd", "application/json"),
        (b'{"prompt": "hi", "extra": 1}', "application/json"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),
    ],
)
async def test_malformed_chat_bodies_are_4xx_json_never_500(
    api: httpx.AsyncClient, api_key: str, content: bytes, content_type: str
) -> None:
    response = await api.post(
        "/v1/chat", content=content, headers={"x-api-key": api_key, "content-type": content_type}
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")


async def test_a_body_over_one_megabyte_is_413_json_from_nginx(
    api: httpx.AsyncClient, api_key: str
) -> None:
    response = await chat(api, api_key, "x" * (1024 * 1024 + 10))
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == "payload_too_large"


async def test_a_long_prompt_under_the_body_limit_is_400(
    api: httpx.AsyncClient, api_key: str
) -> None:
    response = await chat(api, api_key, "x" * 40_000)
    assert response.status_code == 400
    assert response.json()["code"] == "prompt_too_long"


async def test_chat_is_rate_limited_per_user_and_the_window_slides(
    strict_stack: Stack, fake_ollama_control: FakeOllamaControl
) -> None:
    async with httpx.AsyncClient(base_url=strict_stack.public_url, timeout=30.0) as client:
        key, other = await register(client), await register(client)
        statuses = [(await chat(client, key)).status_code for _ in range(3)]
        limited = await chat(client, key)
        assert statuses == [200, 200, 200]
        assert limited.status_code == 429
        assert limited.json()["message"] == "Too many requests. Try again later."
        assert 1 <= int(limited.headers["retry-after"]) <= 2
        assert (await chat(client, other)).status_code == 200  # per user, not global
        await asyncio.sleep(int(limited.headers["retry-after"]) + 0.2)
        assert (await chat(client, key)).status_code == 200


async def test_the_rate_limit_holds_under_concurrency(
    strict_stack: Stack, fake_ollama_control: FakeOllamaControl
) -> None:
    async with httpx.AsyncClient(base_url=strict_stack.public_url, timeout=30.0) as client:
        key = await register(client)
        await asyncio.sleep(0)  # registrations do not share the chat window
        responses = await asyncio.gather(
            *(client.get("/test", headers={"x-api-key": key}) for _ in range(12))
        )
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 9


async def test_registration_is_limited_per_client_address(strict_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=strict_stack.public_url, timeout=30.0) as client:
        statuses = []
        for i in range(6):
            response = await client.post("/v1/register", json={"email": f"reg{i}@example.com"})
            statuses.append(response.status_code)
    assert 429 in statuses
    assert statuses[statuses.index(429) :] == [429] * (len(statuses) - statuses.index(429))
