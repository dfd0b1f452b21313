"""ai-service's Ollama calls, with Ollama replaced at the HTTP edge."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import ollama
import pytest
from ai_service.llm import LlmClient
from ai_service.schemas import GenerateRequest
from infergate_common.errors import AppError, UpstreamTimeoutError, UpstreamUnavailableError

Handler = Callable[[httpx.Request], httpx.Response]


def llm_with(handler: Handler) -> LlmClient:
    client = ollama.AsyncClient(host="http://ollama.test", transport=httpx.MockTransport(handler))
    return LlmClient(client, default_model="llama3")


def chat_reply(**fields: Any) -> httpx.Response:
    body = {
        "model": "llama3",
        "created_at": "2026-11-29T00:00:00Z",
        "message": {"role": "assistant", "content": "Hello there"},
        "done": True,
        "done_reason": "stop",
        **fields,
    }
    return httpx.Response(200, json=body)


async def test_generate_returns_text_and_ollamas_token_counts() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return chat_reply(prompt_eval_count=11, eval_count=7)

    result = await llm_with(handler).generate(GenerateRequest(prompt="Hi", maxTokens=32))
    assert (result.output, result.tokens, result.promptTokens, result.completionTokens) == (
        "Hello there",
        18,
        11,
        7,
    )
    assert seen[0]["options"]["num_predict"] == 32
    assert seen[0]["messages"] == [{"role": "user", "content": "Hi"}]
    assert seen[0]["stream"] is False


async def test_a_missing_count_is_zero_not_an_error() -> None:
    result = await llm_with(lambda _: chat_reply(eval_count=4)).generate(
        GenerateRequest(prompt="Hi", maxTokens=8)
    )
    assert (result.promptTokens, result.completionTokens, result.tokens) == (0, 4, 4)


def raise_(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "error", "code"),
    [
        (
            lambda _: httpx.Response(404, json={"error": "model 'llama3' not found"}),
            UpstreamUnavailableError,
            "model_not_found",
        ),
        (
            lambda _: httpx.Response(500, json={"error": "boom"}),
            UpstreamUnavailableError,
            "llm_error",
        ),
        (raise_(httpx.ConnectError("refused")), UpstreamUnavailableError, "llm_unavailable"),
        (raise_(httpx.ReadTimeout("slow")), UpstreamTimeoutError, "llm_timeout"),
        (lambda _: httpx.Response(200, json={"done": True}), UpstreamUnavailableError, "llm_error"),
    ],
)
async def test_ollama_failures_become_503_or_504(
    handler: Handler, error: type[AppError], code: str
) -> None:
    with pytest.raises(error) as caught:
        await llm_with(handler).generate(GenerateRequest(prompt="Hi", maxTokens=8))
    assert caught.value.error_code == code


async def test_configured_sampling_defaults_apply_unless_the_request_sets_them() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content)["options"])
        return chat_reply(prompt_eval_count=1, eval_count=1)

    client = ollama.AsyncClient(host="http://ollama.test", transport=httpx.MockTransport(handler))
    llm = LlmClient(client, default_model="m", default_options={"temperature": 0.0, "seed": 42})
    await llm.generate(GenerateRequest(prompt="a", maxTokens=4))
    await llm.generate(GenerateRequest(prompt="a", maxTokens=4, temperature=0.7, seed=1))
    assert seen == [
        {"temperature": 0.0, "seed": 42, "num_predict": 4},
        {"temperature": 0.7, "seed": 1, "num_predict": 4},
    ]
