"""Quota alerts by webhook, end to end: users set a webhook through nginx and the gateway, chat past
their thresholds, and a local receiver gets one signed event per threshold; retries, a restart or
a kill of usage-service in the middle, the SSRF rules and the operator's global webhook.

One stack for the module, with a tiny quota (1000 tokens) and the test LLM set so that a chat of
"hi" costs 118 tokens (18 of prompt, 100 of output): the 7th chat passes 80 %, the 9th fills the
month (its output capped to what is left), the 10th is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from infergate_devstack.nginx import UNLIMITED_EDGE
from infergate_devstack.stack import Stack

from tests.fake_ollama_fixtures import FakeOllamaControl, FakeOllamaProcess
from tests.faults import wait_until
from tests.helpers import chat, local_stack, register
from tests.webhook_receiver import (
    Received,
    WebhookReceiver,
    delivery_env,
    expected_signature,
)
from tests.webhook_receiver import receiver as receiver

OPERATOR_SECRET = "whsec_" + "b3BlcmF0b3Itc2VjcmV0LWZvci10aGUtZTJlLXRlc3Q="
CHATS_TO_80, CHATS_TO_100 = 7, 9


@pytest.fixture(scope="module")
def webhook_stack(
    tmp_path_factory: pytest.TempPathFactory,
    fake_ollama: FakeOllamaProcess,
    receiver: WebhookReceiver,
) -> Iterator[Stack]:
    env = {
        **UNLIMITED_EDGE,
        "FREE_RATE_LIMIT": "100000",
        "REGISTRATION_RATE_LIMIT": "100000",
        "AUTH_FAILURE_RATE_LIMIT": "100000",
        "FREE_MONTHLY_TOKENS": "1000",
        "MAX_OUTPUT_TOKENS": "100",
        "PROMPT_TOKEN_OVERHEAD": "16",
        **delivery_env(receiver),
        "QUOTA_WEBHOOK_URL": f"{receiver.url}/operator",
        "QUOTA_WEBHOOK_SECRET": OPERATOR_SECRET,
        "QUOTA_WEBHOOK_THRESHOLDS": "100",
    }
    with local_stack(tmp_path_factory.mktemp("webhooks"), fake_ollama.url, env) as stack:
        yield stack


@pytest.fixture
async def api(webhook_stack: Stack, receiver: WebhookReceiver) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=webhook_stack.public_url, timeout=30.0) as client:
        yield client
    receiver.succeed()
    receiver.release()
    for name in webhook_stack.process_names():  # whatever a test stopped runs again
        if not webhook_stack.process(name).running():
            webhook_stack.start(name)


@pytest.fixture(autouse=True)
async def costly_chats(fake_ollama_control: FakeOllamaControl) -> None:
    await fake_ollama_control.configure(prompt_tokens=18, completion_tokens=100)


class User:
    def __init__(self, api: httpx.AsyncClient, key: str, user_id: str) -> None:
        self.api, self.key, self.id = api, key, user_id
        self.headers = {"x-api-key": key}

    async def chats(self, count: int, *, expect: int = 200) -> None:
        for _ in range(count):
            response = await chat(self.api, self.key, "hi")
            assert response.status_code == expect, response.text

    async def set_webhook(self, url: str, thresholds: list[int] | None = None) -> httpx.Response:
        body: dict[str, Any] = {"url": url}
        if thresholds is not None:
            body["thresholds"] = thresholds
        return await self.api.put("/v1/webhook", json=body, headers=self.headers)

    async def deliveries(self) -> list[dict[str, Any]]:
        response = await self.api.get("/v1/webhook/deliveries", headers=self.headers)
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data


async def new_user(api: httpx.AsyncClient) -> User:
    key = await register(api)
    me = await api.get("/test", headers={"x-api-key": key})
    return User(api, key, me.json()["user"]["userId"])


def of(user: User, got: list[Received], path: str = "/mine") -> list[Received]:
    """What `user`'s crossings brought to `path` (its query left out)."""
    return [r for r in got if r.path.split("?")[0] == path and r.event["data"]["userId"] == user.id]


def signed_by(received: Received, secret: str) -> bool:
    return received.headers["webhook-signature"] == expected_signature(
        secret,
        msg_id=received.headers["webhook-id"],
        timestamp=received.headers["webhook-timestamp"],
        body=received.body,
    )


async def test_chats_past_80_then_100_percent_deliver_one_signed_event_each(
    api: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    user, sentinel = await new_user(api), await new_user(api)
    created = await user.set_webhook(f"{receiver.url}/mine?k=1")
    assert created.status_code == 200, created.text
    assert created.json()["thresholds"] == [80, 100]
    secret = created.json()["secret"]
    shown = await api.get("/v1/webhook", headers=user.headers)
    assert shown.status_code == 200
    assert "secret" not in shown.json()
    await user.chats(CHATS_TO_80 - 1)
    await user.chats(1)  # 826 tokens: past 80 %
    await receiver.wait_for(lambda got: len(of(user, got)) == 1)
    await user.chats(CHATS_TO_100 - CHATS_TO_80)  # 1000 tokens: the month is full
    await user.chats(2, expect=403)
    # Another user's crossing after all that: once it is in, any repeat would have been too.
    assert (await sentinel.set_webhook(f"{receiver.url}/mine", [10])).status_code == 200
    await sentinel.chats(1)
    got = await receiver.wait_for(
        lambda got: bool(of(sentinel, got) and of(user, got, "/operator"))
    )
    mine = of(user, got)
    assert [r.event["data"]["threshold"] for r in mine] == [80, 100]
    assert [r.event["data"]["usedTokens"] for r in mine] == [826, 1000]
    assert {r.event["data"]["monthlyLimit"] for r in mine} == {1000}
    assert len({r.headers["webhook-id"] for r in mine}) == 2
    assert all(signed_by(r, secret) for r in mine)
    assert mine[0].path == "/mine?k=1"
    [operator] = of(user, got, "/operator")  # the operator's thresholds: 100 only
    assert operator.event["data"]["threshold"] == 100
    assert signed_by(operator, OPERATOR_SECRET)
    assert not signed_by(operator, secret)
    log = await user.deliveries()
    assert [(d["threshold"], d["status"]) for d in log] == [(100, "delivered"), (80, "delivered")]


async def test_a_receiver_failing_three_times_gets_the_event_on_the_fourth_try(
    api: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    user = await new_user(api)
    assert (await user.set_webhook(f"{receiver.url}/mine", [10])).status_code == 200
    receiver.fail_next(3)
    await user.chats(1)
    got = await receiver.wait_for(lambda got: any(r.status == 204 for r in of(user, got)))
    attempts = of(user, got)
    assert [r.status for r in attempts] == [500, 500, 500, 204]
    assert len({r.headers["webhook-id"] for r in attempts}) == 1
    [delivery] = await user.deliveries()
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 4
    assert [a["statusCode"] for a in delivery["history"]] == [500, 500, 500, 204]


async def test_usage_service_stopped_with_an_event_pending_delivers_it_after_restart(
    api: httpx.AsyncClient, receiver: WebhookReceiver, webhook_stack: Stack
) -> None:
    user = await new_user(api)
    assert (await user.set_webhook(f"{receiver.url}/mine", [10])).status_code == 200
    receiver.fail_next(10_000)
    await user.chats(1)
    await receiver.wait_for(lambda got: len(of(user, got)) >= 1)  # queued, and failing
    webhook_stack.stop("usage")
    receiver.succeed()
    webhook_stack.start("usage")
    got = await receiver.wait_for(lambda got: any(r.status == 204 for r in of(user, got)))
    assert len({r.headers["webhook-id"] for r in of(user, got)}) == 1
    assert [r.status for r in of(user, got)].count(204) == 1
    [delivery] = await user.deliveries()
    assert delivery["status"] == "delivered"


async def test_usage_service_killed_mid_attempt_delivers_once_its_lease_ends(
    api: httpx.AsyncClient, receiver: WebhookReceiver, webhook_stack: Stack
) -> None:
    user = await new_user(api)
    assert (await user.set_webhook(f"{receiver.url}/mine", [10])).status_code == 200
    receiver.hold()
    await user.chats(1)

    async def in_flight() -> bool:
        return bool(of(user, receiver.held))

    await wait_until(in_flight, timeout_s=15)
    webhook_stack.stop("usage", kill=True)  # holding the event's lease, never to finish
    receiver.release()
    webhook_stack.start("usage")
    got = await receiver.wait_for(lambda got: bool(of(user, got)), timeout_s=20)
    [delivered] = of(user, got)
    assert delivered.status == 204
    assert delivered.headers["webhook-id"] == of(user, receiver.held)[0].headers["webhook-id"]
    [delivery] = await user.deliveries()
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 2)


async def test_a_private_url_is_refused_without_the_allowance(
    api: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    user = await new_user(api)
    for url, reason in (
        (f"http://127.0.0.1:{receiver.port + 1}/", "loopback address"),
        ("http://10.0.0.7/hook", "private address"),
        ("http://169.254.169.254/latest/meta-data/", "address"),
        ("http://localhost/", "loopback address"),
        ("https://user:pw@93.184.215.14/", "credentials"),
        ("file:///etc/passwd", "http:// or https://"),
    ):
        refused = await user.set_webhook(url)
        assert refused.status_code == 400, url
        assert refused.json()["code"] == "webhook_url_refused"
        assert reason in refused.json()["message"], refused.json()
    bad_thresholds = await user.set_webhook(f"{receiver.url}/mine", [0, 80])
    assert bad_thresholds.status_code == 400
    assert (await api.get("/v1/webhook", headers=user.headers)).status_code == 404
    assert (await user.set_webhook(f"{receiver.url}/mine")).status_code == 200
    removed = await api.delete("/v1/webhook", headers=user.headers)
    assert removed.status_code == 200
    assert (await api.get("/v1/webhook", headers=user.headers)).status_code == 404
    assert (await api.post("/v1/webhook/secret", headers=user.headers)).status_code == 404
    assert (await api.get("/v1/webhook")).status_code == 401


async def test_the_operators_webhook_hears_users_without_their_own(
    api: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    user = await new_user(api)
    await user.chats(CHATS_TO_100)
    got = await receiver.wait_for(lambda got: bool(of(user, got, "/operator")))
    [event] = of(user, got, "/operator")
    assert event.event["data"]["usedTokens"] == 1000
    assert signed_by(event, OPERATOR_SECRET)
    assert await user.deliveries() == []  # the operator's deliveries are not the user's
