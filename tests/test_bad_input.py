"""Bad request bodies, through nginx and on the internal services (with their token): each gets a
4xx JSON error, never a 500 and never a hang. test_edge.py covers malformed /v1/chat bodies."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from infergate_devstack.stack import Stack

from tests.fake_ollama_fixtures import FakeOllamaControl
from tests.helpers import reservation_wire, settlement_wire

JSON = "application/json"
BODY_ROUTES = ["/v1/register", "/v1/chat", "/v1/chat/completions"]
HUGE = "x" * 900_000  # under nginx's 1 MB body limit, so the services see it
LONE_SURROGATE = "\\ud800"  # valid JSON escape, not valid Unicode


def assert_4xx_json(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith(JSON)
    body = response.json()
    assert "message" in body or "error" in body  # InferGate's shape, or OpenAI's


def unique_email() -> str:
    return f"abuse-{uuid.uuid4().hex}@example.com"


def completion(**changes: Any) -> dict[str, Any]:
    return {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], **changes}


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"email": "a@example.com", "prompt": "hi"}', "text/plain"),
        (b"email=a%40example.com&prompt=hi", "application/x-www-form-urlencoded"),
        (
            b"--b\r\nContent-Disposition: form-data; name=prompt\r\n\r\nhi\r\n--b--",
            "multipart/form-data; boundary=b",
        ),
        (b'{"prompt": ' + b"[" * 300_000 + b"]" * 300_000 + b"}", JSON),
        (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, JSON),
        (b'{"prompt": "\xc0\xaf", "email": "\xff@example.com"}', JSON),
        (b'{"prompt": "a\x00b", "email": "a\x00@example.com"}', JSON),
        (b"null", JSON),
        (b"1e999999", JSON),
    ],
    ids=[
        "text-plain",
        "form",
        "multipart",
        "deep-array",
        "deep-object",
        "bad-utf8",
        "raw-nul",
        "null",
        "huge-number",
    ],
)
async def test_a_malformed_body_on_any_public_route_is_4xx_json(
    api: httpx.AsyncClient, api_key: str, path: str, content: bytes, content_type: str
) -> None:
    headers = {"x-api-key": api_key, "content-type": content_type}
    assert_4xx_json(await api.post(path, content=content, headers=headers))


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
async def test_json_sent_without_its_content_type_is_told_which_header_is_missing(
    api: httpx.AsyncClient, api_key: str, path: str, content_type: str | None
) -> None:
    """`curl -d '{...}'` sends a form's Content-Type (or none): the error names the header."""
    headers = {"x-api-key": api_key, **({"content-type": content_type} if content_type else {})}
    body = b'{"email": "a@example.com", "prompt": "hi", "model": "llama3", "messages": []}'

    response = await api.post(path, content=body, headers=headers)

    assert response.status_code == 400
    error = response.json().get("error", response.json())  # OpenAI's shape or InferGate's
    assert error["code"] == "invalid_content_type"
    assert "Content-Type: application/json" in error["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/register", {"email": HUGE + "@example.com"}),
        ("/v1/chat", {"prompt": HUGE}),
        ("/v1/chat", {"prompt": "hi", "model": HUGE}),
        ("/v1/chat/completions", completion(model=HUGE)),
        ("/v1/chat/completions", completion(messages=[{"role": "user", "content": HUGE}])),
        ("/v1/chat/completions", completion(stop=HUGE)),
    ],
    ids=["email", "prompt", "chat-model", "completion-model", "content", "stop"],
)
async def test_a_huge_string_in_any_field_is_400(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl, path: str, body: dict[str, Any]
) -> None:
    response = await api.post(path, json=body, headers={"x-api-key": api_key})
    assert response.status_code == 400, response.text[:300]
    assert_4xx_json(response)


# Raw JSON, so lone surrogates can be spelled. These got a 500 from /v1/chat/completions
# (UnicodeEncodeError when counting the prompt's bytes or encoding the call to the ai-service).
@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/register", '{"email": "%s@example.com"}'),
        ("/v1/chat", '{"prompt": "hi %s"}'),
        ("/v1/chat", '{"prompt": "hi", "model": "%s"}'),
        (
            "/v1/chat/completions",
            '{"model": "%s", "messages": [{"role": "user", "content": "hi"}]}',
        ),
        (
            "/v1/chat/completions",
            '{"model": "llama3", "messages": [{"role": "user", "content": "%s"}]}',
        ),
        (
            "/v1/chat/completions",
            '{"model": "llama3", "messages": [{"role": "user", '
            '"content": [{"type": "text", "text": "%s"}]}]}',
        ),
        (
            "/v1/chat/completions",
            '{"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stop": "%s"}',
        ),
        (
            "/v1/chat/completions",
            '{"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stop": ["%s"]}',
        ),
    ],
    ids=[
        "email",
        "prompt",
        "chat-model",
        "completion-model",
        "content",
        "text-part",
        "stop",
        "stop-list",
    ],
)
@pytest.mark.parametrize("text", [LONE_SURROGATE, "\\u0000"], ids=["lone-surrogate", "nul"])
async def test_nul_or_a_lone_surrogate_in_any_text_field_is_400(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl, path: str, raw: str, text: str
) -> None:
    headers = {"x-api-key": api_key, "content-type": JSON}
    response = await api.post(path, content=(raw % text).encode(), headers=headers)
    assert response.status_code in {400, 404}, response.text[:300]  # 404: no such model
    assert_4xx_json(response)


async def test_a_seed_beyond_64_bits_is_400(
    api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    calls = (await llm.stats())["chat_calls"]
    response = await api.post(
        "/v1/chat/completions", json=completion(seed=2**64), headers={"x-api-key": api_key}
    )
    assert response.status_code == 400
    assert (await llm.stats())["chat_calls"] == calls


# -- internal usage routes: token counts ---------------------------------------------------------


def _internal(stack: Stack, service: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.service_url(service),
        headers={"x-internal-token": stack.internal_token},
        timeout=10.0,
    )


BAD_COUNTS: list[Any] = [-1, 0.5, 1.0, 10**12, 2**64, 10**30, "100", "abc", True, None, [], {}]
BAD_MILLIS: list[Any] = [-1, 1e12, "5", True, None, {"$gt": 0}]


async def test_bad_token_counts_on_the_usage_routes_are_400_and_change_nothing(
    stack: Stack,
) -> None:
    user_id = uuid.uuid4().hex[:24]
    async with _internal(stack, "usage") as usage:
        reserve = reservation_wire(user_id, 100)
        held = await usage.post("/usage/reserve", json=reserve)
        assert held.status_code == 201, held.text
        settle = settlement_wire(reserve, prompt=10, completion=10)
        attempt: dict[str, Any] = {"requestId": "r2", "userId": user_id}
        attempt |= {"status": "RATE_LIMITED"}
        attempt |= {"model": "llama3", "responseTimeMs": 5, "startedAt": reserve["startedAt"]}
        cases = [("/usage/reserve", reserve | {"tokens": value}) for value in BAD_COUNTS]
        cases += [("/usage/reserve", reserve | {"minTokens": value}) for value in BAD_COUNTS]
        for field in ("reservedTokens", "promptTokens", "completionTokens"):
            cases += [("/usage/settle", settle | {field: value}) for value in BAD_COUNTS]
        cases += [("/usage/settle", settle | {"responseTimeMs": v}) for v in BAD_MILLIS]
        cases += [("/usage/attempts", attempt | {"responseTimeMs": v}) for v in BAD_MILLIS]
        for path, body in cases:
            response = await usage.post(path, json=body)
            assert response.status_code == 400, (path, body, response.text)
            assert_4xx_json(response)
        month = (await usage.get(f"/usage/{user_id}")).json()
    assert (month["usedTokens"], month["reservedTokens"]) == (0, 100)


@pytest.mark.parametrize("value", [-1, 0, 10**9, 2**64, 1.5, None, "many", {"$gt": 0}])
async def test_bad_output_caps_on_the_ai_service_are_400(
    stack: Stack, llm: FakeOllamaControl, value: Any
) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "maxTokens": value}
    async with _internal(stack, "ai") as ai:
        response = await ai.post("/ai/generate", json=body)
    assert response.status_code == 400, response.text
    assert (await llm.stats())["chat_calls"] == 0
