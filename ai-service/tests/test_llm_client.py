"""ai-service's Ollama calls, with Ollama replaced at the HTTP edge."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import ollama
import pytest
from ai_service.llm import LlmClient, ModelTokens
from ai_service.schemas import GenerateRequest
from infergate_common.errors import (
    AppError,
    NotFoundError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from ollama_replies import chat_body
from prometheus_client import CollectorRegistry

Handler = Callable[[httpx.Request], httpx.Response]


def request(text: str, max_tokens: int, **extra: Any) -> GenerateRequest:
    return GenerateRequest.model_validate(
        {"messages": [{"role": "user", "content": text}], "maxTokens": max_tokens, **extra}
    )


def llm_with(handler: Handler) -> LlmClient:
    client = ollama.AsyncClient(host="http://ollama.test", transport=httpx.MockTransport(handler))
    return LlmClient(client, default_model="llama3")


def chat_reply(**fields: Any) -> httpx.Response:
    return httpx.Response(200, json=chat_body(**fields))


async def test_generate_returns_text_and_ollamas_token_counts() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return chat_reply(prompt_eval_count=11, eval_count=7)

    result = await llm_with(handler).generate(request("Hi", 32))
    assert (result.output, result.tokens, result.promptTokens, result.completionTokens) == (
        "Hello there",
        18,
        11,
        7,
    )
    assert seen[0]["options"]["num_predict"] == 32
    assert seen[0]["messages"] == [{"role": "user", "content": "Hi"}]
    assert seen[0]["stream"] is False


async def test_a_missing_count_is_passed_on_as_unknown_not_as_zero() -> None:
    result = await llm_with(lambda _: chat_reply(eval_count=4)).generate(request("Hi", 8))
    assert (result.promptTokens, result.completionTokens, result.tokens) == (None, 4, None)


def raise_(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "error", "code"),
    [
        (
            lambda _: httpx.Response(404, json={"error": "model 'llama3' not found"}),
            NotFoundError,
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
        await llm_with(handler).generate(request("Hi", 8))
    assert caught.value.error_code == code


async def test_configured_sampling_defaults_apply_unless_the_request_sets_them() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content)["options"])
        return chat_reply(prompt_eval_count=1, eval_count=1)

    client = ollama.AsyncClient(host="http://ollama.test", transport=httpx.MockTransport(handler))
    llm = LlmClient(client, default_model="m", default_options={"temperature": 0.0, "seed": 42})
    await llm.generate(request("a", 4))
    await llm.generate(request("a", 4, temperature=0.7, seed=1))
    assert seen == [
        {"temperature": 0.0, "seed": 42, "num_predict": 4},
        {"temperature": 0.7, "seed": 1, "num_predict": 4},
    ]


def ndjson(*objects: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, content=b"".join(json.dumps(o).encode() + b"\n" for o in objects))


async def collect(llm: LlmClient) -> list[dict[str, Any]]:
    events = await llm.stream(request("Hi", 8, stream=True))
    return [json.loads(line) async for line in events]


async def test_stream_relays_deltas_then_the_final_counts() -> None:
    chunk = {"model": "llama3", "created_at": "x", "done": False}
    reply = ndjson(
        {**chunk, "message": {"role": "assistant", "content": "Hel"}},
        {**chunk, "message": {"role": "assistant", "content": "lo"}},
        {
            **chunk,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 4,
            "eval_count": 2,
        },
    )
    events = await collect(llm_with(lambda _: reply))
    assert events[:2] == [{"type": "delta", "content": "Hel"}, {"type": "delta", "content": "lo"}]
    assert events[2]["type"] == "done"
    assert (events[2]["promptTokens"], events[2]["completionTokens"]) == (4, 2)


async def test_an_error_line_mid_stream_ends_with_an_error_event() -> None:
    chunk = {"model": "llama3", "created_at": "x", "done": False}
    reply = ndjson({**chunk, "message": {"role": "assistant", "content": "Hel"}}, {"error": "oom"})
    events = await collect(llm_with(lambda _: reply))
    assert events[0] == {"type": "delta", "content": "Hel"}
    assert events[1]["type"] == "error"
    assert events[1]["status"] == 503


async def test_a_stream_failing_before_the_first_chunk_raises() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UpstreamUnavailableError):
        await llm_with(refused).stream(request("Hi", 8, stream=True))


async def test_models_lists_the_servers_models_without_the_latest_tag() -> None:
    tags = {
        "models": [
            {"model": "llama3:latest", "name": "llama3:latest"},
            {"model": "qwen2:7b", "name": "qwen2:7b"},
        ]
    }
    assert await llm_with(lambda _: httpx.Response(200, json=tags)).models() == [
        "llama3",
        "qwen2:7b",
    ]


async def test_an_alias_of_another_model_is_described_with_its_other_names() -> None:
    details = {"family": "llama", "parameter_size": "135M", "quantization_level": "Q4_1"}
    tags = {
        "models": [
            {"model": "llama3:latest", "digest": "d1", "details": details},
            {"model": "smollm2:135m", "digest": "d1", "details": details},
            {"model": "qwen2:7b", "digest": "d2"},
        ]
    }

    catalog = await llm_with(lambda _: httpx.Response(200, json=tags)).catalog()

    described = {model.name: model for model in catalog}
    assert described["llama3"].sameAs == ["smollm2:135m"]
    assert described["smollm2:135m"].sameAs == ["llama3"]
    assert described["qwen2:7b"].sameAs == []
    assert (described["llama3"].parameterSize, described["llama3"].quantization) == (
        "135M",
        "Q4_1",
    )


async def test_the_models_own_counts_are_counted_once_per_call_plain_and_streamed() -> None:
    registry = CollectorRegistry()
    chunk = {"model": "llama3", "created_at": "x", "done": False}
    streamed = ndjson(
        {**chunk, "message": {"role": "assistant", "content": "Hi"}},
        {
            **chunk,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "eval_count": 3,
            "prompt_eval_count": 5,
        },
    )
    replies = iter([chat_reply(prompt_eval_count=11, eval_count=7), streamed])
    client = ollama.AsyncClient(
        host="http://ollama.test", transport=httpx.MockTransport(lambda _: next(replies))
    )
    llm = LlmClient(client, default_model="llama3", tokens=ModelTokens(registry))

    def counted(token_type: str) -> float | None:
        labels = {"gen_ai_token_type": token_type, "gen_ai_request_model": "llama3"}
        return registry.get_sample_value("infergate_ai_model_tokens_total", labels)

    assert (counted("input"), counted("output")) == (0, 0)  # there before the first call
    await llm.generate(request("Hi", 32))
    assert (counted("input"), counted("output")) == (11, 7)
    await collect(llm)
    assert (counted("input"), counted("output")) == (16, 10)
