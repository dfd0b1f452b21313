"""Secrets at rest: no issued API key in any database, and no key, key hash, prompt or model
output in any log line of any process of the stack."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

import httpx
import redis.asyncio as redis
from infergate_devstack.stack import Stack
from pymongo import AsyncMongoClient

from tests.fake_ollama_fixtures import FakeOllamaControl
from tests.helpers import chat, register

SECRET_WINDOW = 12  # a key's display prefix (kept for operators) is 10 characters


def fragments(key: str) -> list[str]:
    """Every run of SECRET_WINDOW characters of the key: none may be stored anywhere."""
    return [key[i : i + SECRET_WINDOW] for i in range(len(key) - SECRET_WINDOW + 1)]


def near_miss(key: str) -> str:
    """The key with one character changed (still a well-formed key)."""
    middle = len(key) // 2
    return key[:middle] + ("A" if key[middle] != "A" else "B") + key[middle + 1 :]


async def mongo_dump(uri: str) -> str:
    """Every document of every collection of every database, as text."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        parts = []
        for database in await client.list_database_names():
            for collection in await client[database].list_collection_names():
                async for document in client[database][collection].find({}):
                    parts.append(f"{database}.{collection}: {document!r}")
        return "\n".join(parts)
    finally:
        await client.close()


async def redis_dump(url: str) -> str:
    """Every key of the gateway's Redis and, for sorted sets and hashes (the settlement outbox),
    every member and value."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        parts = []
        async for key in client.scan_iter(count=1000):
            parts.append(repr(key))
            kind = await client.type(key)
            if kind == b"zset":
                parts += [repr(member) for member in await client.zrange(key, 0, -1)]
            elif kind == b"hash":
                parts += [repr(item) for item in (await client.hgetall(key)).items()]
        return "\n".join(parts)
    finally:
        await client.aclose()


async def test_api_keys_are_stored_nowhere_in_plaintext(
    stack: Stack, api: httpx.AsyncClient, llm: FakeOllamaControl
) -> None:
    keys = [await register(api), await register(api)]
    for key in keys:
        assert (await chat(api, key, "store nothing")).status_code == 200
        assert (await api.get("/v1/usage", headers={"x-api-key": key})).status_code == 200
    stored = await mongo_dump(stack.mongo_uri) + "\n" + await redis_dump(stack.redis_url)
    for key in keys:
        assert hashlib.sha256(key.encode()).hexdigest() in stored  # the scan saw the users
        assert [part for part in fragments(key) if part in stored] == []


async def _wait_for_request_id(stack: Stack, request_id: str) -> None:
    """Services write their access line just after answering: wait for the last one."""
    for _ in range(50):
        if all(request_id in stack.log_path(s).read_text() for s in ("gateway", "usage", "ai")):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {request_id} never reached every log")


async def _use_the_key_every_way(
    api: httpx.AsyncClient, key: str, prompts: list[str], request_id: str
) -> None:
    """Chats whole, streamed and OpenAI-style; refusals for the same key and prompts."""
    headers = {"x-api-key": key}
    bearer = {"authorization": f"Bearer {key}"}
    completion = {"model": "llama3", "messages": [{"role": "user", "content": prompts[1]}]}
    answers = [
        await chat(api, key, prompts[0]),
        await api.post("/v1/chat", json={"prompt": prompts[2], "stream": True}, headers=headers),
        await api.post("/v1/chat/completions", json=completion, headers=bearer),
        await api.get("/v1/usage", headers=headers),
        await api.get("/test", headers=headers),
    ]
    assert [a.status_code for a in answers] == [200] * len(answers)
    refused = [
        await chat(api, near_miss(key), prompts[0]),  # unknown key
        await chat(api, key, prompts[3] + "\x00"),  # NUL: 400
        await chat(api, key, prompts[3] * 2_000),  # too long: 400
        await api.post("/v1/chat", json={"prompt": prompts[3], "bogus": key}, headers=headers),
    ]
    assert [a.status_code for a in refused] == [401, 400, 400, 400]
    last = await api.post(
        "/v1/chat", json={"prompt": prompts[0]}, headers={**headers, "x-request-id": request_id}
    )
    assert last.status_code == 200


async def test_no_log_line_holds_a_key_its_hash_a_prompt_or_an_output(
    stack: Stack, api: httpx.AsyncClient, llm: FakeOllamaControl
) -> None:
    reply = f"reply-{uuid.uuid4().hex}"
    await llm.configure(reply=reply)
    key = await register(api)
    prompts = [f"prompt{i}-{uuid.uuid4().hex}" for i in range(4)]
    request_id = f"secrets-{uuid.uuid4().hex}"
    await _use_the_key_every_way(api, key, prompts, request_id)
    await _wait_for_request_id(stack, request_id)

    key_hash = hashlib.sha256(key.encode()).hexdigest()
    secrets = {
        "key": key,
        "key without prefix": key[3:],
        "near-miss key": near_miss(key),
        "key hash": key_hash,
        "key hash prefix": key_hash[:16],
        "reply": reply,
        **{f"prompt {i}": prompt for i, prompt in enumerate(prompts)},
    }
    logs = sorted(path for path in stack.logs_dir.rglob("*") if path.is_file())
    assert {path.stem for path in logs} >= {"gateway", "auth", "usage", "ai", "nginx-access"}
    leaks = [
        f"{name} in {path.name}"
        for path in logs
        for name, secret in secrets.items()
        if secret in path.read_text(errors="replace")
    ]
    assert leaks == []
