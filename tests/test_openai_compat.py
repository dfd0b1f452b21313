"""The OpenAI-compatible API, driven by the official `openai` SDK through nginx."""

from __future__ import annotations

import httpx
import openai
import pytest
from infergate_devstack.stack import Stack

from tests.fake_ollama_fixtures import FakeOllamaControl
from tests.helpers import usage

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hi"},
]


def sdk(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{stack.public_url}/v1", max_retries=0)


def async_sdk(stack: Stack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=f"{stack.public_url}/v1", max_retries=0)


async def test_sync_completion_is_metered_like_chat(
    stack: Stack, api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    completion = sdk(stack, api_key).chat.completions.create(
        model="llama3", messages=MESSAGES, max_tokens=50, temperature=0, seed=7
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "echo: Say hi"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 5)
    assert completion.usage.total_tokens == 12
    assert (await usage(api, api_key))["usedTokens"] == 12
    sent = (await llm.stats())["last_request"]
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["options"]["num_predict"] == 50
    assert (sent["options"]["temperature"], sent["options"]["seed"]) == (0, 7)


async def test_async_streaming_with_usage(
    stack: Stack, api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    client = async_sdk(stack, api_key)
    stream = await client.chat.completions.create(
        model="llama3",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: Say hi"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 12
    assert (await usage(api, api_key))["usedTokens"] == 12
    await client.close()


async def test_the_bearer_key_and_the_x_api_key_both_work(
    stack: Stack, api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    response = await api.get("/v1/models", headers={"x-api-key": api_key})
    assert response.status_code == 200
    models = sdk(stack, api_key).models.list()
    assert [m.id for m in models.data] == ["llama3"]
    assert response.json()["data"][0]["id"] == "llama3"


async def test_errors_come_as_the_sdks_exception_classes(
    stack: Stack, api_key: str, llm: FakeOllamaControl
) -> None:
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        sdk(stack, "sk_wrong").chat.completions.create(model="llama3", messages=MESSAGES)
    assert unauthorized.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as unknown_model:
        sdk(stack, api_key).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert unknown_model.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        sdk(stack, api_key).chat.completions.create(model="llama3", messages=[])
    assert bad.value.type == "invalid_request_error"
    await llm.configure(fail_status=500)
    with pytest.raises(openai.InternalServerError) as upstream:
        sdk(stack, api_key).chat.completions.create(model="llama3", messages=MESSAGES)
    assert upstream.value.status_code == 503


async def test_an_exhausted_quota_is_429_insufficient_quota_that_sdks_do_not_retry(
    stack: Stack, api: httpx.AsyncClient, api_key: str, llm: FakeOllamaControl
) -> None:
    await llm.configure(prompt_tokens=40, completion_tokens=100)
    client = sdk(stack, api_key)
    for _ in range(7):  # 7 x 140 of 1000 tokens, as in the /v1/chat quota test
        client.chat.completions.create(
            model="llama3", messages=[{"role": "user", "content": "x" * 30}]
        )
    calls_before = (await llm.stats())["chat_calls"]
    retrying = openai.OpenAI(api_key=api_key, base_url=f"{stack.public_url}/v1", max_retries=2)
    with pytest.raises(openai.RateLimitError) as refused:
        retrying.chat.completions.create(
            model="llama3", messages=[{"role": "user", "content": "x" * 30}]
        )
    assert refused.value.code == "insufficient_quota"
    assert refused.value.response.headers["x-should-retry"] == "false"
    # Not retried (x-should-retry: false), and the model was never called.
    assert (await llm.stats())["chat_calls"] == calls_before
    body = refused.value.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}
