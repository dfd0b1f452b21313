"""End to end with the real embedded model (SmolLM2-135M behind the Ollama-compatible server).

The model's answers are often wrong, so these tests check structure and numbers, never text:
temperature 0 and a fixed seed make the counts repeatable.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import ollama
import pytest
from infergate_devstack.ports import Ports
from infergate_devstack.stack import Stack, StackConfig

from tests.helpers import provisioned, register, usage

pytestmark = pytest.mark.e2e

MAX_TOKENS = 48
PROMPT = "Name one colour of the rainbow."


@pytest.fixture(scope="module")
def model_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "DEFAULT_TEMPERATURE": "0",
        "DEFAULT_SEED": "42",
        "MAX_OUTPUT_TOKENS": str(MAX_TOKENS),
        "REGISTRATION_RATE_LIMIT": "1000",
        "FREE_RATE_LIMIT": "1000",
    }
    # No ollama_url: the stack starts the embedded model, as `make run` does without Ollama.
    config = StackConfig(
        data_dir=provisioned(tmp_path_factory.mktemp("e2e")), ports=Ports.free(), env=env
    )
    with Stack(config) as stack:
        yield stack


@pytest.fixture
async def client(model_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=model_stack.public_url, timeout=120.0) as c:
        yield c


async def model_count(stack: Stack, prompt: str) -> int:
    """What the model itself reports for the same request: prompt + completion tokens."""
    direct = ollama.AsyncClient(host=stack.llm_url, timeout=120)
    response = await direct.chat(
        model="llama3",
        messages=[{"role": "user", "content": prompt}],
        options={"temperature": 0, "seed": 42, "num_predict": MAX_TOKENS},
    )
    assert response.prompt_eval_count is not None
    assert response.eval_count is not None
    return response.prompt_eval_count + response.eval_count


async def test_a_real_chat_is_metered_with_the_models_own_counts(
    client: httpx.AsyncClient, model_stack: Stack
) -> None:
    assert "embedded" in model_stack.llm_description
    key = await register(client)
    response = await client.post("/v1/chat", json={"prompt": PROMPT}, headers={"x-api-key": key})
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["output"], str)
    assert body["output"].strip()
    assert body["tokensUsed"] == await model_count(model_stack, PROMPT)
    assert (await usage(client, key))["usedTokens"] == body["tokensUsed"]


async def test_the_models_listing_says_which_model_answers_as_llama3(
    client: httpx.AsyncClient,
) -> None:
    key = await register(client)

    response = await client.get("/v1/models", headers={"x-api-key": key})

    assert response.status_code == 200, response.text
    (card,) = response.json()["data"]
    assert card["id"] == "llama3"
    assert card["root"] == "smollm2:135m"  # the embedded model behind the alias
    assert card["details"]["parameter_size"] == "135M"


async def test_a_real_streamed_chat_sends_text_and_is_metered(
    client: httpx.AsyncClient,
) -> None:
    key = await register(client)
    events: list[dict[str, Any]] = []
    async with client.stream(
        "POST", "/v1/chat", json={"prompt": PROMPT, "stream": True}, headers={"x-api-key": key}
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    deltas = [e["output"] for e in events if e["type"] == "delta"]
    done = events[-1]
    assert len(deltas) > 1
    assert "".join(deltas).strip()
    assert done["type"] == "done"
    assert done["completionTokens"] <= MAX_TOKENS
    assert done["tokensUsed"] == done["promptTokens"] + done["completionTokens"] > 0
    assert (await usage(client, key))["usedTokens"] == done["tokensUsed"]
