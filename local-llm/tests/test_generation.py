"""Chat and generate through the unmodified ollama client, against the real model.

A 135M model's answers are often wrong: these tests assert structure and numbers, never text.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import ollama
import pytest
from ollama import ChatResponse, GenerateResponse

QUESTION = [{"role": "user", "content": "Name three colours."}]
# A raw continuation the model keeps extending: long outputs without relying on their content.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
GREEDY = {"temperature": 0, "seed": 42}


def assert_final_usage(final: ChatResponse | GenerateResponse) -> None:
    assert final.done is True
    assert final.done_reason in {"stop", "length"}
    assert final.prompt_eval_count is not None
    assert final.prompt_eval_count > 0
    assert final.eval_count is not None
    assert final.eval_count > 0
    for duration in (final.total_duration, final.prompt_eval_duration, final.eval_duration):
        assert duration is not None
        assert duration > 0
    assert final.total_duration is not None
    assert final.eval_duration is not None
    assert final.total_duration >= final.eval_duration
    assert final.created_at
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", final.created_at)


async def test_chat_without_streaming_returns_the_whole_message_and_usage(
    client: ollama.AsyncClient,
) -> None:
    reply = await client.chat("llama3", messages=QUESTION, options=GREEDY)
    assert reply.model == "llama3"
    assert reply.message.role == "assistant"
    assert reply.message.content
    assert_final_usage(reply)


async def test_chat_stream_sends_chunks_then_one_final_object_with_usage(
    client: ollama.AsyncClient,
) -> None:
    parts = [part async for part in await client.chat("llama3", QUESTION, stream=True)]
    *chunks, final = parts
    assert chunks, "a streamed answer comes in several chunks"
    assert all(not chunk.done and chunk.eval_count is None for chunk in chunks)
    assert all(chunk.message.content for chunk in chunks)
    assert_final_usage(final)
    assert final.message.content == ""
    # Each chunk holds at least one generated token.
    assert final.eval_count is not None
    assert len(chunks) <= final.eval_count


async def test_generate_without_streaming_returns_response_and_context(
    client: ollama.AsyncClient,
) -> None:
    reply = await client.generate("tiny:latest", "Say hello.", options=GREEDY)
    assert reply.response
    assert_final_usage(reply)
    assert reply.context is not None
    assert reply.prompt_eval_count is not None
    assert reply.eval_count is not None
    assert len(reply.context) == reply.prompt_eval_count + reply.eval_count


async def test_generate_stream_counts_match_the_streamed_chunks(
    client: ollama.AsyncClient,
) -> None:
    stream = await client.generate(
        "smollm2:135m", COUNTING, raw=True, stream=True, options={"num_predict": 12}
    )
    *chunks, final = [part async for part in stream]
    assert_final_usage(final)
    assert final.context is None  # raw mode has no context, as in Ollama
    assert final.eval_count == 12
    assert 0 < len(chunks) <= 12


async def test_stream_is_ndjson_without_blank_lines(local_llm: str) -> None:
    body = {"model": "llama3", "prompt": COUNTING, "raw": True, "options": {"num_predict": 5}}
    async with (
        httpx.AsyncClient(base_url=local_llm) as http,
        http.stream("POST", "/api/generate", json=body) as response,
    ):
        assert response.headers["content-type"] == "application/x-ndjson"
        raw = (await response.aread()).decode()
    assert raw.endswith("\n")
    lines = raw.split("\n")[:-1]
    assert all(line.strip() for line in lines)
    objects = [json.loads(line) for line in lines]
    assert [obj["done"] for obj in objects] == [False] * (len(objects) - 1) + [True]


async def test_format_json_constrains_the_output_to_json(client: ollama.AsyncClient) -> None:
    # A question whose greedy answer closes the object well within the cap (a 135M model can
    # loop inside a JSON object, which then ends at the cap, unparsable, as it would on Ollama).
    prompt = [{"role": "user", "content": "Reply with JSON: the name and age of a person."}]
    reply = await client.chat("llama3", prompt, format="json", options=GREEDY)
    assert reply.done_reason == "stop"
    assert reply.message.content is not None
    assert isinstance(json.loads(reply.message.content), dict | list | str | int | float)


async def test_format_schema_constrains_the_output_to_the_schema(
    client: ollama.AsyncClient,
) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "legs": {"type": "integer"}},
        "required": ["name", "legs"],
    }
    reply = await client.generate("llama3", "Describe a cat.", format=schema, options=GREEDY)
    assert reply.response is not None
    parsed: dict[str, Any] = json.loads(reply.response)
    assert isinstance(parsed["name"], str)
    assert isinstance(parsed["legs"], int)


async def test_num_predict_caps_the_output_with_done_reason_length(
    client: ollama.AsyncClient,
) -> None:
    reply = await client.generate("llama3", COUNTING, raw=True, options={"num_predict": 5})
    assert reply.eval_count == 5
    assert reply.done_reason == "length"


async def server_cap(client: ollama.AsyncClient) -> int:
    shown = await client.show("llama3")
    assert shown.parameters is not None
    found = re.search(r"num_predict (\d+)", shown.parameters)
    assert found is not None
    return int(found.group(1))


@pytest.mark.parametrize("num_predict", [None, -1, 100_000])
async def test_the_server_cap_applies_without_a_smaller_num_predict(
    client: ollama.AsyncClient, num_predict: int | None
) -> None:
    cap = await server_cap(client)
    options = {} if num_predict is None else {"num_predict": num_predict}
    reply = await client.generate("llama3", COUNTING, raw=True, options=options)
    assert reply.eval_count is not None
    assert reply.eval_count <= cap
    if reply.done_reason == "length":
        assert reply.eval_count == cap


async def test_a_stop_sequence_ends_the_output_before_it(client: ollama.AsyncClient) -> None:
    options = {**GREEDY, "stop": [" 14"], "num_predict": 40}
    reply = await client.generate("llama3", COUNTING, raw=True, options=options)
    # Greedy counting reaches 14 well within 40 tokens.
    assert reply.done_reason == "stop"
    assert reply.response is not None
    assert " 14" not in reply.response


async def test_empty_messages_and_empty_prompt_report_load(client: ollama.AsyncClient) -> None:
    chat = await client.chat("llama3", messages=[])
    generated = await client.generate("llama3", "")
    assert (chat.done, chat.done_reason, chat.message.content) == (True, "load", "")
    assert (generated.done, generated.done_reason, generated.response) == (True, "load", "")


async def test_an_unknown_model_is_404(client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        await client.generate("mistral", "hi")
    assert raised.value.status_code == 404


async def test_an_unknown_model_is_404_before_a_stream_starts(
    client: ollama.AsyncClient,
) -> None:
    stream = await client.chat("mistral", QUESTION, stream=True)
    with pytest.raises(ollama.ResponseError) as raised:
        await anext(stream)
    assert raised.value.status_code == 404


async def test_two_concurrent_requests_both_complete(client: ollama.AsyncClient) -> None:
    chat, generated = await asyncio.gather(
        client.chat("llama3", QUESTION, options={"num_predict": 20}),
        client.generate("llama3", COUNTING, raw=True, options={"num_predict": 20}),
    )
    assert_final_usage(chat)
    assert_final_usage(generated)


@pytest.mark.parametrize("temperature", [0, 0.8])
async def test_a_fixed_seed_repeats_the_output(
    client: ollama.AsyncClient, temperature: float
) -> None:
    options = {"temperature": temperature, "seed": 7, "num_predict": 40}
    first = await client.chat("llama3", QUESTION, options=options)
    second = await client.chat("llama3", QUESTION, options=options)
    assert first.message.content == second.message.content
    assert first.eval_count == second.eval_count
