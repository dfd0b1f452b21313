"""The fake Ollama server, driven by the unmodified `ollama.AsyncClient` as the ai-service does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import ollama
import pytest

from tests.fake_ollama_fixtures import FakeOllamaControl, FakeOllamaProcess

USER_TEXT = "Tell me something deterministic, please."
ECHO = "echo: " + USER_TEXT[:20]
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": USER_TEXT}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOllamaProcess]:
    with FakeOllamaProcess() as process:
        yield process


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


@pytest.fixture
async def control(server: FakeOllamaProcess, http: httpx.AsyncClient) -> FakeOllamaControl:
    control = FakeOllamaControl(server.url, http)
    await control.reset()
    return control


@pytest.fixture
async def client(
    server: FakeOllamaProcess, control: FakeOllamaControl
) -> AsyncIterator[ollama.AsyncClient]:
    async with ollama.AsyncClient(host=server.url) as client:
        yield client


async def test_root_answers_ollama_is_running_for_get_and_head(
    server: FakeOllamaProcess, http: httpx.AsyncClient
) -> None:
    get = await http.get(server.url + "/")
    head = await http.head(server.url + "/")

    assert (get.status_code, get.text) == (200, "Ollama is running")
    assert get.headers["content-type"].startswith("text/plain")
    assert (head.status_code, head.content) == (200, b"")


async def test_version_tags_and_show_describe_the_configured_models(
    client: ollama.AsyncClient, control: FakeOllamaControl, http: httpx.AsyncClient
) -> None:
    version = await http.get(control.url + "/api/version")
    default_tags = await client.list()
    await control.configure(models=["qwen:0.5b", "smollm2"])
    tags = await client.list()
    show = await client.show("smollm2")

    assert isinstance(version.json()["version"], str)
    assert [model.model for model in default_tags.models] == ["llama3:latest"]
    assert [model.model for model in tags.models] == ["qwen:0.5b", "smollm2:latest"]
    assert show.modelinfo is not None
    assert show.modelinfo["general.architecture"] == "llama"


async def test_chat_without_stream_returns_echo_and_exact_token_counts(
    client: ollama.AsyncClient,
) -> None:
    response = await client.chat("llama3", messages=MESSAGES)

    assert response.model == "llama3"
    assert response.message.role == "assistant"
    assert response.message.content == ECHO
    assert response.done is True
    assert response.done_reason == "stop"
    assert (response.prompt_eval_count, response.eval_count) == (7, 5)
    for duration in (
        response.total_duration,
        response.prompt_eval_duration,
        response.eval_duration,
    ):
        assert isinstance(duration, int)
        assert duration > 0


async def test_chat_stream_sends_one_chunk_per_token_then_final_metrics(
    client: ollama.AsyncClient,
) -> None:
    parts = [part async for part in await client.chat("llama3:latest", MESSAGES, stream=True)]

    *chunks, final = parts
    assert len(chunks) == 5
    assert all(not part.done and part.eval_count is None for part in chunks)
    assert "".join(part.message.content or "" for part in parts) == ECHO
    assert final.done is True
    assert final.done_reason == "stop"
    assert (final.prompt_eval_count, final.eval_count) == (7, 5)


async def test_stream_is_the_default_when_stream_is_omitted(
    server: FakeOllamaProcess, http: httpx.AsyncClient
) -> None:
    body = {"model": "llama3", "messages": MESSAGES}

    response = await http.post(server.url + "/api/chat", json=body)

    assert response.headers["content-type"] == "application/x-ndjson"
    lines = response.text.splitlines()
    assert len(lines) == 6
    assert response.text.endswith("\n")
    assert '"done":true' in lines[-1]


async def test_configured_token_counts_and_reply_are_reported_exactly(
    client: ollama.AsyncClient, control: FakeOllamaControl
) -> None:
    await control.configure(prompt_tokens=123, completion_tokens=3, reply="fixed reply")

    whole = await client.chat("llama3", messages=MESSAGES)
    parts = [part async for part in await client.chat("llama3", MESSAGES, stream=True)]

    assert whole.message.content == "fixed reply"
    assert (whole.prompt_eval_count, whole.eval_count) == (123, 3)
    assert len(parts) == 4
    assert "".join(part.message.content or "" for part in parts) == "fixed reply"


async def test_num_predict_below_completion_tokens_caps_eval_count_with_length(
    client: ollama.AsyncClient,
) -> None:
    options = {"num_predict": 2}

    whole = await client.chat("llama3", messages=MESSAGES, options=options)
    parts = [
        part async for part in await client.chat("llama3", MESSAGES, stream=True, options=options)
    ]

    assert (whole.eval_count, whole.done_reason) == (2, "length")
    assert ECHO.startswith(whole.message.content or "")
    assert len(whole.message.content or "") < len(ECHO)
    assert (parts[-1].eval_count, parts[-1].done_reason) == (2, "length")
    assert len(parts) == 3


async def test_num_predict_zero_generates_nothing_and_omits_eval_count(
    client: ollama.AsyncClient,
) -> None:
    response = await client.generate("llama3", prompt=USER_TEXT, options={"num_predict": 0})

    assert (response.response, response.done_reason) == ("", "length")
    assert response.eval_count is None
    assert response.prompt_eval_count == 7


async def test_num_predict_above_completion_tokens_changes_nothing(
    client: ollama.AsyncClient,
) -> None:
    response = await client.chat("llama3", messages=MESSAGES, options={"num_predict": 50})

    assert (response.eval_count, response.done_reason) == (5, "stop")
    assert response.message.content == ECHO


async def test_generate_streams_and_answers_with_response_field(
    client: ollama.AsyncClient,
) -> None:
    whole = await client.generate("llama3", prompt=USER_TEXT)
    parts = [part async for part in await client.generate("llama3", prompt=USER_TEXT, stream=True)]

    assert whole.response == ECHO
    assert (whole.prompt_eval_count, whole.eval_count, whole.done_reason) == (7, 5, "stop")
    assert "".join(part.response or "" for part in parts) == ECHO
    assert parts[-1].done is True
    assert parts[-1].eval_count == 5


async def test_omit_prompt_eval_count_drops_the_field_like_a_cached_prompt(
    client: ollama.AsyncClient, control: FakeOllamaControl
) -> None:
    await control.configure(omit_prompt_eval_count=True)

    response = await client.chat("llama3", messages=MESSAGES)

    assert response.prompt_eval_count is None
    assert response.eval_count == 5


async def test_empty_messages_answer_load_without_metrics(client: ollama.AsyncClient) -> None:
    response = await client.chat("llama3", messages=[])

    assert (response.done, response.done_reason, response.message.content) == (True, "load", "")
    assert response.eval_count is None


async def test_unknown_model_is_404_with_ollama_error_text(client: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        await client.chat("mistral", messages=MESSAGES)

    assert raised.value.status_code == 404
    assert raised.value.error == "model 'mistral' not found"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "missing request body"),
        (b"{not json", "invalid JSON"),
        (b"[]", "JSON object"),
        (b'{"messages": []}', "model is required"),
        (b'{"model": "llama3", "messages": [{"role": "user", "content": 1}]}', "content"),
        (b'{"model": "llama3", "messages": [], "options": {"num_predict": "x"}}', "num_predict"),
    ],
)
async def test_bad_chat_body_is_400_with_error_field(
    server: FakeOllamaProcess, http: httpx.AsyncClient, content: bytes, needle: str
) -> None:
    response = await http.post(server.url + "/api/chat", content=content)

    assert response.status_code == 400
    assert needle in response.json()["error"]


@pytest.mark.parametrize("stream", [False, True])
async def test_fail_status_raises_response_error_with_that_status(
    client: ollama.AsyncClient, control: FakeOllamaControl, stream: bool
) -> None:
    await control.configure(fail_status=503)

    with pytest.raises(ollama.ResponseError) as raised:
        await (collect_stream(client) if stream else client.chat("llama3", messages=MESSAGES))

    assert raised.value.status_code == 503


async def test_fail_mid_stream_raises_after_the_first_chunk(
    client: ollama.AsyncClient, control: FakeOllamaControl
) -> None:
    await control.configure(fail_mid_stream=True)
    received: list[str] = []

    with pytest.raises(ollama.ResponseError) as raised:
        await collect_stream(client, into=received)

    assert raised.value.status_code == -1
    assert len(received) == 1
    assert ECHO.startswith(received[0])


async def test_fail_mid_stream_without_streaming_is_a_500(
    client: ollama.AsyncClient, control: FakeOllamaControl
) -> None:
    await control.configure(fail_mid_stream=True)

    with pytest.raises(ollama.ResponseError) as raised:
        await client.generate("llama3", prompt=USER_TEXT)

    assert raised.value.status_code == 500


async def test_delay_outlasting_the_client_timeout_times_out_and_counts_a_disconnect(
    server: FakeOllamaProcess, control: FakeOllamaControl
) -> None:
    await control.configure(delay_s=2.0)

    async with ollama.AsyncClient(host=server.url, timeout=0.2) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.chat("llama3", messages=MESSAGES)

    assert await wait_for_disconnects(control, 1)


async def test_delay_shorter_than_the_timeout_still_answers(
    server: FakeOllamaProcess, control: FakeOllamaControl
) -> None:
    await control.configure(delay_s=0.2)

    async with ollama.AsyncClient(host=server.url, timeout=5.0) as patient:
        response = await patient.chat("llama3", messages=MESSAGES)

    assert response.message.content == ECHO
    assert (await control.stats())["disconnects"] == 0


async def test_client_leaving_a_slow_stream_counts_a_disconnect(
    server: FakeOllamaProcess, control: FakeOllamaControl, http: httpx.AsyncClient
) -> None:
    await control.configure(chunk_delay_s=0.5)
    body = {"model": "llama3", "messages": MESSAGES}

    async with http.stream("POST", server.url + "/api/chat", json=body) as response:
        first = await anext(response.aiter_lines())

    assert '"done":false' in first
    assert await wait_for_disconnects(control, 1)


async def test_stats_count_concurrent_calls_exactly_and_keep_the_last_body(
    client: ollama.AsyncClient, control: FakeOllamaControl
) -> None:
    await control.configure(chunk_delay_s=0.001)
    chats = [client.chat("llama3", messages=MESSAGES) for _ in range(40)]
    streams = [collect_stream(client) for _ in range(20)]
    generates = [client.generate("llama3", prompt=USER_TEXT) for _ in range(30)]

    await asyncio.gather(*chats, *streams, *generates)
    await client.chat(
        "llama3", messages=[{"role": "user", "content": "last one"}], options={"seed": 1}
    )
    stats = await control.stats()

    assert (stats["chat_calls"], stats["generate_calls"]) == (61, 30)
    assert stats["last_request"]["messages"] == [{"role": "user", "content": "last one"}]
    assert stats["last_request"]["options"] == {"seed": 1}
    assert (stats["disconnects"], stats["in_flight"]) == (0, 0)
    assert stats["max_in_flight"] > 1


async def test_reset_restores_defaults_and_zeroes_counters(
    client: ollama.AsyncClient, control: FakeOllamaControl
) -> None:
    await control.configure(completion_tokens=1, fail_status=500)
    with pytest.raises(ollama.ResponseError):
        await client.chat("llama3", messages=MESSAGES)

    config = await control.reset()
    stats = await control.stats()
    response = await client.chat("llama3", messages=MESSAGES)

    assert (config["completion_tokens"], config["fail_status"]) == (5, None)
    assert (stats["chat_calls"], stats["last_request"]) == (0, None)
    assert response.eval_count == 5


async def test_config_merges_and_rejects_unknown_or_mistyped_keys(
    control: FakeOllamaControl, http: httpx.AsyncClient
) -> None:
    await control.configure(prompt_tokens=3)
    merged = await control.configure(completion_tokens=4)
    unknown = await http.post(control.url + "/_control/config", json={"nope": 1})
    mistyped = await http.post(control.url + "/_control/config", json={"delay_s": "slow"})
    negative = await http.post(control.url + "/_control/config", json={"prompt_tokens": -1})

    assert (merged["prompt_tokens"], merged["completion_tokens"]) == (3, 4)
    assert [r.status_code for r in (unknown, mistyped, negative)] == [400, 400, 400]
    assert "nope" in unknown.json()["error"]


async def collect_stream(client: ollama.AsyncClient, *, into: list[str] | None = None) -> str:
    """Stream a chat; each chunk's content lands in `into` as it arrives."""
    received = [] if into is None else into
    async for part in await client.chat("llama3", MESSAGES, stream=True):
        received.append(part.message.content or "")
    return "".join(received)


async def wait_for_disconnects(control: FakeOllamaControl, expected: int) -> bool:
    """The server notices a disconnect asynchronously: poll briefly instead of sleeping blindly."""
    for _ in range(100):
        if (await control.stats())["disconnects"] == expected:
            return True
        await asyncio.sleep(0.02)
    return False
