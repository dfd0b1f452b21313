"""Calls of the public API the way a user makes them (through nginx)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from infergate_common.billing import RequestStatus, ReservationRequest, Settlement
from infergate_common.validation import Plan
from infergate_devstack import install
from infergate_devstack.components.datastores import MongoUsers, provision_mongo
from infergate_devstack.ports import Ports
from infergate_devstack.stack import Stack, StackConfig
from infergate_devstack.stack_secrets import load_or_create

# The stacks' ADMIN_TOKEN (the admin API is called on a gateway directly, never through nginx).
ADMIN_TOKEN = "integration-admin-token-0123456789"


@functools.cache
def _provisioned_template() -> Path:
    """A data directory whose SecantusDB already has the stack's users, made once per test
    process (deleted at its exit)."""
    template = Path(tempfile.mkdtemp(prefix="infergate-test-stack-"))
    atexit.register(shutil.rmtree, template, ignore_errors=True)
    provision_mongo(
        program=install.secantusd_program(),
        data_dir=template / "mongo",
        users=MongoUsers.of(load_or_create(template / "secrets.json")),
        log_path=template / "provision.log",
    )
    return template


def provisioned(data_dir: Path) -> Path:
    """`data_dir`, seeded (when empty) with a copy of the session's provisioned template: its
    secrets and a SecantusDB that has the users. A fresh data directory would cost each stack a
    SecantusDB start and stop to create them (about 3 s); the test stacks share the secrets, all
    on loopback. A directory that holds a stack already is left as it is (restarts)."""
    if data_dir.exists() and any(data_dir.iterdir()):
        return data_dir
    template = _provisioned_template()
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(template / "secrets.json", data_dir / "secrets.json")
    shutil.copytree(template / "mongo", data_dir / "mongo")
    return data_dir


def local_stack(
    data_dir: Path,
    llm_url: str,
    env: Mapping[str, str],
    *,
    gateway_replicas: int = 1,
    replicas: Mapping[str, int] | None = None,
) -> Stack:
    """A whole local stack on free loopback ports, with the test LLM (start it with `with`)."""
    config = StackConfig(
        data_dir=provisioned(data_dir),
        ports=Ports.free(),
        ollama_url=llm_url,
        env=dict(env),
        gateway_replicas=gateway_replicas,
        replicas=dict(replicas or {}),
    )
    return Stack(config)


async def register(client: httpx.AsyncClient) -> str:
    """A fresh user's API key."""
    response = await client.post(
        "/v1/register", json={"email": f"user-{uuid.uuid4().hex}@example.com"}
    )
    assert response.status_code == 201, response.text
    key: str = response.json()["apiKey"]
    return key


async def chat(client: httpx.AsyncClient, key: str, prompt: Any = "Hello there") -> httpx.Response:
    return await client.post("/v1/chat", json={"prompt": prompt}, headers={"x-api-key": key})


async def usage(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    response = await client.get("/v1/usage", headers={"x-api-key": key})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def reservation_wire(user_id: str, tokens: int) -> dict[str, Any]:
    """A valid body of usage-service's POST /usage/reserve (called with the internal token)."""
    return ReservationRequest(
        reservation_id=uuid.uuid4().hex,
        request_id=uuid.uuid4().hex,
        user_id=user_id,
        plan=Plan.FREE,
        tokens=tokens,
        min_tokens=tokens,
        hold_seconds=60,
        model="llama3",
        started_at=datetime.now(UTC),
    ).wire()


def settlement_wire(reservation: dict[str, Any], *, prompt: int, completion: int) -> dict[str, Any]:
    """A valid body of POST /usage/settle for a reservation made with `reservation_wire`."""
    return Settlement(
        reservation_id=reservation["reservationId"],
        request_id=reservation["requestId"],
        user_id=reservation["userId"],
        plan=Plan.FREE,
        reserved_tokens=reservation["tokens"],
        prompt_tokens=prompt,
        completion_tokens=completion,
        status=RequestStatus.SUCCESS,
        model="llama3",
        response_time_ms=5.0,
        started_at=datetime.fromisoformat(reservation["startedAt"]),
    ).wire()
