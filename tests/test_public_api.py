"""The public API through nginx, end to end with the deterministic test LLM."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from infergate_devstack.stack import Stack

from tests.fake_ollama_fixtures import FakeOllamaControl
from tests.helpers import chat, usage


async def test_health_endpoints_answer_through_nginx(api: httpx.AsyncClient) -> None:
    health = await api.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert (body["status"], body["service"]) == ("OK", "api-gateway")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", body["timestamp"])
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {}}  # publicly: nothing named


async def test_readiness_details_are_on_the_gateways_own_port_only(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.service_url("gateway"), timeout=10) as gateway:
        ready = await gateway.get("/readyz")
    assert ready.json()["checks"] == {"redis": "ok", "auth": "ok", "usage": "ok", "ai": "ok"}


async def test_register_chat_and_usage(api: httpx.AsyncClient, llm: FakeOllamaControl) -> None:
    response = await api.post("/v1/register", json={"email": "First.User@Example.com"})
    assert response.status_code == 201
    body = response.json()
    assert body["message"] == "User registered successfully"
    assert body["plan"] == "FREE"
    key = body["apiKey"]
    assert key.startswith("sk_")

    reply = await chat(api, key, "Say hello")
    assert reply.status_code == 200
    assert reply.json() == {"output": "echo: Say hello", "tokensUsed": 12}
    assert await usage(api, key) == {
        "usedTokens": 12,
        "monthlyLimit": 1000,
        "remainingTokens": 988,
        "percentageUsed": 1.2,
    }
    test = await api.get("/test", headers={"x-api-key": key})
    assert test.status_code == 200
    assert test.json()["message"] == "Access granted"
    assert test.json()["user"]["plan"] == "FREE"


async def test_registering_an_email_twice_is_409(api: httpx.AsyncClient) -> None:
    first = await api.post("/v1/register", json={"email": "twice@example.com"})
    second = await api.post("/v1/register", json={"email": " TWICE@example.com "})
    assert first.status_code == 201
    assert second.status_code == 409
    assert second.json()["message"] == "User already exists"


@pytest.mark.parametrize("body", [{}, {"email": "nope"}, {"email": 5}, {"email": {"$ne": None}}])
async def test_registering_without_a_valid_email_is_400(
    api: httpx.AsyncClient, body: object
) -> None:
    response = await api.post("/v1/register", json=body)
    assert response.status_code == 400
    assert set(response.json()) == {"message", "code", "requestId"}


async def test_keys_are_checked(api: httpx.AsyncClient) -> None:
    missing = await api.post("/v1/chat", json={"prompt": "x"})
    wrong = await chat(api, "sk_" + "A" * 43)
    assert (missing.status_code, missing.json()["message"]) == (401, "API key missing")
    assert (wrong.status_code, wrong.json()["message"]) == (401, "Invalid API key")
    assert (await api.get("/v1/usage", headers={"x-api-key": "nope"})).status_code == 401


@pytest.mark.parametrize("prompt", ["", " ", 3, None, {"$ne": None}])
async def test_a_bad_prompt_is_400_prompt_is_required(
    api: httpx.AsyncClient, api_key: str, prompt: object
) -> None:
    response = await chat(api, api_key, prompt)
    assert response.status_code == 400
    assert response.json()["message"] == "Prompt is required"


async def test_quota_exhaustion_refuses_before_the_model_is_called(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    # Each chat reserves 30 bytes + 16 overhead + 100 output = 146 and is charged 40 + 100.
    await llm.configure(prompt_tokens=40, completion_tokens=100)
    prompt = "x" * 30
    statuses = [(await chat(api, api_key, prompt)).status_code for _ in range(7)]
    assert statuses == [200] * 7
    calls_before = (await llm.stats())["chat_calls"]
    refused = await chat(api, api_key, prompt)  # 20 tokens left: not even the prompt's 47
    assert refused.status_code == 403
    body = refused.json()
    assert body["message"] == (
        "Token quota exceeded: this request needs up to 146 tokens (at least 47 for its prompt) "
        "and 20 are left this month"
    )
    assert (body["neededTokens"], body["minimumTokens"], body["remainingTokens"]) == (146, 47, 20)
    assert (await llm.stats())["chat_calls"] == calls_before
    assert (await usage(api, api_key))["usedTokens"] == 980


async def test_a_month_short_of_the_worst_case_gives_a_shorter_answer_not_a_refusal(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    await llm.configure(prompt_tokens=40, completion_tokens=100)
    for _ in range(6):  # 140 tokens each: 160 left
        assert (await chat(api, api_key, "x" * 30)).status_code == 200
    # Worst case 100 + 16 + 100 = 216 > 160 left; the prompt's bound (116) and some output fit.
    reply = await chat(api, api_key, "y" * 100)
    assert reply.status_code == 200
    assert (await llm.stats())["last_request"]["options"]["num_predict"] == 160 - 116
    assert reply.json()["tokensUsed"] == 40 + 44  # the model stopped at the cap
    assert (await usage(api, api_key))["usedTokens"] == 6 * 140 + 84


async def test_concurrent_chats_near_the_limit_never_overshoot(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    await llm.configure(prompt_tokens=40, completion_tokens=60, delay_s=0.05)
    responses = await asyncio.gather(*(chat(api, api_key, "x" * 30) for _ in range(50)))
    assert {r.status_code for r in responses} <= {200, 403}
    charged = sum(r.json()["tokensUsed"] for r in responses if r.status_code == 200)
    assert 403 in {r.status_code for r in responses}
    used = (await usage(api, api_key))["usedTokens"]
    assert used == charged
    assert used <= 1000


async def test_a_failed_model_call_charges_nothing(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    await llm.configure(fail_status=500)
    failed = await chat(api, api_key)
    await llm.configure(fail_status=None, models=["other:latest"])
    missing_model = await chat(api, api_key)
    assert failed.status_code == 503
    assert missing_model.status_code == 404  # the request's model, not the LLM, is at fault
    assert missing_model.json()["code"] == "model_not_found"
    assert (await usage(api, api_key))["usedTokens"] == 0


async def test_a_slow_model_is_504_ai_service_timeout(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    await llm.configure(delay_s=3.0)  # the test stack's OLLAMA_TIMEOUT is 2 s
    response = await chat(api, api_key)
    assert response.status_code == 504
    assert response.json()["message"] == "AI service timeout"
    assert (await usage(api, api_key))["usedTokens"] == 0


async def test_the_request_id_is_echoed_and_reaches_every_service(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl, stack: Stack
) -> None:
    request_id = "trace-me-0123456789"
    response = await api.post(
        "/v1/chat",
        json={"prompt": "hi"},
        headers={"x-api-key": api_key, "x-request-id": request_id},
    )
    assert response.headers["x-request-id"] == request_id
    # A service writes its access line just after answering: give the last ones a moment.
    missing = {"gateway", "auth", "usage", "ai"}
    for _ in range(40):
        missing = {s for s in missing if request_id not in stack.log_path(s).read_text()}
        if not missing:
            break
        await asyncio.sleep(0.05)
    assert missing == set()


async def test_unsafe_request_ids_are_replaced(api: httpx.AsyncClient) -> None:
    response = await api.get("/health", headers={"x-request-id": "x" * 200})
    assert response.headers["x-request-id"] != "x" * 200
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", response.headers["x-request-id"])


async def test_a_generated_request_id_is_returned_when_none_is_sent(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/usage")
    assert response.status_code == 401
    assert response.json()["requestId"] == response.headers["x-request-id"]
