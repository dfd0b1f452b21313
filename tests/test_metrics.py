"""Prometheus metrics of the whole stack, read from each process's own /metrics (internal ports).

What breaks if the feature breaks: billed tokens that are not the ones clients were told (or are
counted twice), series that multiply with users (a user id, key or request id as a label),
metrics leaking through nginx or behind the internal token, the overhead header missing.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx
from infergate_devstack.stack import Stack
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_ollama_fixtures import FakeOllamaControl
from tests.faults import read_stream, wait_until

TARGETS = ("gateway", "auth", "usage", "ai")
# Families whose series appear with failures (a label per error kind or failed command): bounded
# by construction, but whether one shows up depends on luck, so they are not counted here.
ERROR_FAMILIES = frozenset({"infergate_mongo_errors", "infergate_internal_call_errors"})


async def scrape(stack: Stack, target: str) -> str:
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.get(f"{stack.service_url(target)}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def series(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


async def total(stack: Stack, name: str, **labels: str) -> float:
    """The sum of one sample name over every process of the stack (like PromQL's sum())."""
    found = 0.0
    for target in TARGETS:
        for sample, sample_labels, value in series(await scrape(stack, target)):
            if sample == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                found += value
    return found


async def series_count(stack: Stack) -> dict[str, int]:
    counts: dict[str, int] = {}
    for target in TARGETS:
        for family in text_string_to_metric_families(await scrape(stack, target)):
            if family.name not in ERROR_FAMILIES:
                counts[f"{target}/{family.name}"] = len(family.samples)
    return counts


async def each_user_once(
    api: httpx.AsyncClient, users: int, visit: Callable[[str], Awaitable[None]]
) -> list[str]:
    """Register `users` users and run `visit` for each, 8 at a time; their keys."""
    gate = asyncio.Semaphore(8)
    keys: list[str] = []

    async def one() -> None:
        async with gate:
            email = f"series-{uuid.uuid4().hex}@example.com"
            response = await api.post("/v1/register", json={"email": email})
            assert response.status_code == 201, response.text
            key: str = response.json()["apiKey"]
            keys.append(key)
            await visit(key)

    await asyncio.gather(*(one() for _ in range(users)))
    return keys


async def test_metrics_are_served_on_internal_ports_only(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    for target in TARGETS:
        text = await scrape(stack, target)  # no internal token sent
        assert "infergate_http_requests_total" in text
    through_nginx = await api.get("/metrics")
    assert through_nginx.status_code == 404
    assert "infergate_" not in through_nginx.text


async def test_billed_tokens_in_the_metrics_equal_what_clients_were_told(
    stack: Stack, api: httpx.AsyncClient, llm: FakeOllamaControl
) -> None:
    """After N chats, gen_ai_client_token_usage summed over every process grew by exactly the
    tokensUsed the clients received (recorded once, by the gateway), split into input (the
    prompt) and output; ai-service counts the model's own figures under another name."""
    await llm.configure(prompt_tokens=11, completion_tokens=6)
    before_sum = await total(stack, "gen_ai_client_token_usage_sum")
    before_input = await total(stack, "gen_ai_client_token_usage_sum", gen_ai_token_type="input")
    before_count = await total(stack, "gen_ai_client_token_usage_count")
    before_model = await total(stack, "infergate_ai_model_tokens_total")
    before_ttft = await total(stack, "gen_ai_server_time_to_first_token_seconds_count")
    told: list[int] = []

    async def visit(key: str) -> None:
        response = await api.post(
            "/v1/chat", json={"prompt": "Count me"}, headers={"x-api-key": key}
        )
        assert response.status_code == 200, response.text
        told.append(response.json()["tokensUsed"])
        assert 0 <= float(response.headers["x-infergate-overhead-ms"]) < 10_000
        read = await read_stream(api, key, "Count me too")
        assert read.status == 200, read
        assert read.ending is not None, read
        assert "x-infergate-overhead-ms" not in read.headers  # a stream's is only in the metric
        told.append(read.ending["tokensUsed"])

    await each_user_once(api, 12, visit)
    assert len(told) == 24
    assert all(tokens == 17 for tokens in told)

    async def recorded() -> bool:
        return await total(stack, "gen_ai_client_token_usage_sum") - before_sum == sum(told)

    await wait_until(recorded, timeout_s=10)
    input_tokens = await total(stack, "gen_ai_client_token_usage_sum", gen_ai_token_type="input")
    assert input_tokens - before_input == 11 * len(told)
    assert await total(stack, "gen_ai_client_token_usage_count") - before_count == 2 * len(told)
    assert await total(stack, "infergate_ai_model_tokens_total") - before_model == 17 * len(told)
    ttft = await total(stack, "gen_ai_server_time_to_first_token_seconds_count")
    assert ttft - before_ttft == len(told) // 2


async def test_series_do_not_grow_with_users(
    stack: Stack, api: httpx.AsyncClient, llm: FakeOllamaControl
) -> None:
    """500 users each chat (plain and streamed), read their usage and fail once with a bad key:
    the number of series of every process is the same after 20 users as after 500, and nothing
    that names a user is in them."""
    bad_key = f"ig_{uuid.uuid4().hex}"

    async def visit(key: str) -> None:
        headers = {"x-api-key": key}
        answer = await api.post("/v1/chat", json={"prompt": "Hi"}, headers=headers)
        assert answer.status_code == 200, answer.text
        assert (await read_stream(api, key, "Hi")).status == 200
        assert (await api.get("/v1/usage", headers=headers)).status_code == 200
        wrong = await api.post("/v1/chat", json={"prompt": "Hi"}, headers={"x-api-key": bad_key})
        assert wrong.status_code == 401

    first = await each_user_once(api, 20, visit)
    warm = await series_count(stack)
    rest = await each_user_once(api, 480, visit)
    grown = await series_count(stack)
    assert grown == warm, {k: (warm.get(k), v) for k, v in grown.items() if warm.get(k) != v}
    texts = [await scrape(stack, target) for target in TARGETS]
    for key in (*first, *rest[:50], bad_key):
        assert all(key not in text and key[-12:] not in text for text in texts)
    values: Counter[str] = Counter(
        value for text in texts for _, labels, _ in series(text) for value in labels.values()
    )
    # An email, or a run of 20+ letters and digits (a key, a user id, a digest): route templates
    # such as `/usage/{user_id}/webhook/deliveries` are long but name nobody.
    assert not [v for v in values if "@" in v or re.search(r"[A-Za-z0-9]{20,}", v)], values
