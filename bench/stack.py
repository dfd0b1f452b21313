"""The stack under test: the local devstack behind nginx, with the deterministic Ollama-protocol
test server as its LLM (answering at once, fixed token counts), and the benchmark's users."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from infergate_devstack.nginx import UNLIMITED_EDGE
from infergate_devstack.ports import Ports
from infergate_devstack.stack import Stack, StackConfig

from tests.fake_ollama_fixtures import FakeOllamaProcess

CHAT_PROMPT = "Say hello in one short sentence."
MODEL = "llama3"
MAX_TOKENS = 512  # the same limit as the direct body's num_predict
REGISTER_CONCURRENCY = 32
REGISTER_ATTEMPTS = 3


def bench_env(log_level: str) -> dict[str, str]:
    """Limits far above what the load reaches, so the gateway's own path is measured."""
    return {
        **UNLIMITED_EDGE,
        "FREE_RATE_LIMIT": "100000000",
        "FREE_MONTHLY_TOKENS": "2000000000",
        "REGISTRATION_RATE_LIMIT": "100000000",
        "AUTH_FAILURE_RATE_LIMIT": "100000000",
        "LOG_LEVEL": log_level,
        # Every user stays primed until the points: priming 20,000 users on two gateways takes
        # longer than the default 300 s, and a verification cached that long ago would expire
        # (a deployment's active users, chatting within 300 s, stay cached anyway).
        "KEY_CACHE_SECONDS": "3600",
    }


def llm_name(index: int) -> str:
    """The process name of the index-th test LLM: `llm`, then `llm-2`, `llm-3`, ..."""
    return "llm" if index == 0 else f"llm-{index + 1}"


def backends_env(urls: Sequence[str]) -> dict[str, str]:
    """ai-service spread over every test LLM (each serving every model): OLLAMA_URLS."""
    if not urls:
        raise ValueError("at least one backend")
    return {"OLLAMA_URLS": ",".join(urls)}


@dataclass
class BenchStack:
    stack: Stack
    llms: list[FakeOllamaProcess]  # ai-service's backends; the first is `direct`'s

    @property
    def llm(self) -> FakeOllamaProcess:
        return self.llms[0]

    def pids(self) -> dict[str, int]:
        """Every process of the stack by name, the test LLMs as `llm`, `llm-2`, ..."""
        pids: dict[str, int] = {}
        for name in self.stack.process_names():
            pid = self.stack.process(name).pid
            if pid is not None:
                pids[name] = pid
        for index, llm in enumerate(self.llms):
            if llm.process is not None:
                pids[llm_name(index)] = llm.process.pid
        return pids

    def llm_chat_calls(self) -> list[int]:
        """Each test LLM's `/api/chat` calls so far, in the order of `llms`."""
        return [llm_chat_calls(llm.url) for llm in self.llms]


@contextmanager
def running_stack(
    data_dir: Path,
    *,
    log_level: str,
    gateway_replicas: int = 1,
    replicas: Mapping[str, int] | None = None,
    extra_env: Mapping[str, str] | None = None,
    backends: int = 1,
) -> Iterator[BenchStack]:
    """The stack with `backends` test LLMs (each its own process), ai-service spreading its
    calls over all of them (OLLAMA_URLS)."""
    with ExitStack() as started:
        llms = [started.enter_context(FakeOllamaProcess()) for _ in range(backends)]
        # One URL in OLLAMA_URLS is exactly OLLAMA_URL: a pool of one backend.
        spread = backends_env([llm.url for llm in llms])
        config = StackConfig(
            data_dir=data_dir,
            ports=Ports.free(),
            ollama_url=llms[0].url,
            env={**bench_env(log_level), **spread, **(extra_env or {})},
            gateway_replicas=gateway_replicas,
            replicas=dict(replicas or {}),
        )
        with Stack(config) as stack:
            yield BenchStack(stack, llms)


def progress(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


@dataclass
class Registration:
    keys: list[str]
    seconds: float
    failures: list[str]  # 5xx answers that a retry got past (setup must not stop on them)


async def _register_all(public_url: str, count: int, run_id: str) -> Registration:
    semaphore = asyncio.Semaphore(REGISTER_CONCURRENCY)
    limits = httpx.Limits(max_connections=REGISTER_CONCURRENCY)
    failures: list[str] = []
    async with httpx.AsyncClient(base_url=public_url, timeout=30.0, limits=limits) as client:

        async def register(index: int) -> str:
            email = f"bench-{run_id}-{index}@example.com"
            for _ in range(REGISTER_ATTEMPTS):
                async with semaphore:
                    response = await client.post("/v1/register", json={"email": email})
                if response.status_code == 201:
                    key: str = response.json()["apiKey"]
                    return key
                if response.status_code < 500:
                    break
                failures.append(f"{response.status_code} {response.text}")
            raise RuntimeError(f"register: {response.status_code} {response.text}")

        started = time.monotonic()
        keys = await asyncio.gather(*(register(i) for i in range(count)))
        return Registration(list(keys), time.monotonic() - started, failures)


def register_users(public_url: str, count: int) -> Registration:
    """`count` new users through the public API (a 5xx is retried, and reported)."""
    return asyncio.run(_register_all(public_url, count, str(int(time.time() * 1000))))


def check_chat(public_url: str, key: str) -> None:
    """One chat before the load, so a misconfigured stack fails loudly instead of as errors."""
    response = httpx.post(
        f"{public_url}/v1/chat", json={"prompt": CHAT_PROMPT}, headers={"x-api-key": key}
    )
    if response.status_code != 200 or "output" not in response.json():
        raise RuntimeError(f"chat check failed: {response.status_code} {response.text}")


def openai_body() -> dict[str, object]:
    """The OpenAI chat completion both InferGate and LiteLLM answer, byte for byte the same."""
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": CHAT_PROMPT}],
        "max_tokens": MAX_TOKENS,
    }


def check_openai_chat(base_url: str, key: str) -> None:
    """One `POST /v1/chat/completions` answered 200 with the test LLM's reply (it echoes the
    prompt), so a proxy that does not reach the LLM fails before the load, not as figures."""
    response = httpx.post(
        f"{base_url}/v1/chat/completions",
        json=openai_body(),
        headers={"authorization": f"Bearer {key}"},
        timeout=30.0,
    )
    content = ""
    if response.status_code == 200:
        content = response.json()["choices"][0]["message"]["content"] or ""
    if not content.startswith("echo: "):
        raise RuntimeError(f"chat completion check failed: {response.status_code} {response.text}")


def llm_chat_calls(llm_url: str) -> int:
    """How many `/api/chat` calls the test LLM has answered (its `/_control/stats`)."""
    response = httpx.get(f"{llm_url}/_control/stats", timeout=10.0)
    response.raise_for_status()
    calls: int = response.json()["chat_calls"]
    return calls


UNIQUE_PLACEHOLDER = "__N__"  # load.lua puts a number no other request has in its place


def cached_body() -> dict[str, object]:
    """The OpenAI body made deterministic (temperature 0): the response cache keeps its answer."""
    return {**openai_body(), "temperature": 0}


def never_repeated_body() -> str:
    """The deterministic body with a seed load.lua makes unique per request: each one a miss
    (the seed is part of the cache key), each answer stored."""
    text = json.dumps({**cached_body(), "seed": UNIQUE_PLACEHOLDER})
    return text.replace(json.dumps(UNIQUE_PLACEHOLDER), UNIQUE_PLACEHOLDER)


def write_inputs(directory: Path, keys: list[str]) -> dict[str, Path]:
    """The files load.lua reads: the keys, one per line, and the request bodies."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "keys": directory / "keys.txt",
        "chat": directory / "chat.json",
        "openai": directory / "openai-chat.json",
        "cache-hit": directory / "cached-chat.json",
        "cache-miss": directory / "unique-chat.json",
        "llm": directory / "llm-chat.json",
    }
    files["keys"].write_text("\n".join(keys) + "\n")
    files["chat"].write_text(json.dumps({"prompt": CHAT_PROMPT}))
    files["openai"].write_text(json.dumps(openai_body()))
    files["cache-hit"].write_text(json.dumps(cached_body()))
    files["cache-miss"].write_text(never_repeated_body())
    llm_body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": CHAT_PROMPT}],
        "stream": False,
        "options": {"num_predict": MAX_TOKENS},
    }
    files["llm"].write_text(json.dumps(llm_body))
    return files
