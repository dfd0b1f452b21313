"""Quota alerts by webhook through usage-service's internal API, against a real MongoDB-protocol
server and a local receiver: one signed event per threshold crossed, retries with backoff, the
delivery log, the SSRF rules at set time and at delivery, the operator's global webhook."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from usage_calls import HEADERS, new_user, reserve, sample, settings_for, settle, settlement_body
from usage_service.main import create_app

from tests.webhook_receiver import Received, WebhookReceiver, expected_signature

AppClient = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]
OpenApp = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
T = TypeVar("T")
GLOBAL_SECRET = "whsec_" + "Z2xvYmFsLXNlY3JldC1mb3ItdGhlLXRlc3RzLTEyMzQ="


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def open_app(app_client: AppClient, db_uri: str, receiver: WebhookReceiver) -> OpenApp:
    """usage-service with fast retries, allowed to send to the receiver (1000 tokens a month)."""

    @asynccontextmanager
    async def opened(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        values: dict[str, Any] = {
            "quota_webhook_allowed_hosts": [f"127.0.0.1:{receiver.port}"],
            "quota_webhook_retry_seconds": 0.05,
            "quota_webhook_poll_seconds": 0.05,
            **overrides,
        }
        async with app_client(create_app(settings_for(db_uri, **values))) as client:
            yield client

    return opened


async def put_webhook(
    client: httpx.AsyncClient, user: str, url: str, thresholds: list[Any] | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"url": url}
    if thresholds is not None:
        body["thresholds"] = thresholds
    return await client.put(f"/usage/{user}/webhook", json=body, headers=HEADERS)


async def charge(client: httpx.AsyncClient, user: str, tokens: int) -> dict[str, Any]:
    """A chat of `tokens` tokens, reserved and settled; the reservation."""
    reserved = await reserve(client, user, tokens)
    assert reserved.status_code == 201, reserved.text
    reservation: dict[str, Any] = reserved.json()
    await settle(client, settlement_body(user, reservation, tokens, 0))
    return reservation


async def deliveries(client: httpx.AsyncClient, user: str) -> list[dict[str, Any]]:
    response = await client.get(f"/usage/{user}/webhook/deliveries", headers=HEADERS)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def until(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, timeout_s: float = 15.0
) -> T:
    """Poll `read()` until `done` holds for its value, or the deadline passes; the last value."""
    deadline = time.monotonic() + timeout_s
    value = await read()
    while not done(value) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        value = await read()
    return value


def verified(received: Received, secret: str) -> bool:
    headers = received.headers
    expected = expected_signature(
        secret,
        msg_id=headers["webhook-id"],
        timestamp=headers["webhook-timestamp"],
        body=received.body,
    )
    return headers["webhook-signature"] == expected


def events_of(got: list[Received], user: str) -> list[Received]:
    return [r for r in got if r.event["data"]["userId"] == user]


async def test_each_threshold_crossed_is_delivered_once_and_signed(
    open_app: OpenApp,
    receiver: WebhookReceiver,
) -> None:
    async with open_app() as client:
        user, sentinel = new_user(), new_user()
        created = await put_webhook(client, user, f"{receiver.url}/hooks?token=abc")
        assert created.status_code == 200, created.text
        secret = created.json()["secret"]
        assert secret.startswith("whsec_")
        assert (await put_webhook(client, sentinel, receiver.url, [50])).status_code == 200
        await charge(client, user, 500)  # 50 %: below both thresholds
        await charge(client, user, 350)  # 85 %: past 80
        first = await receiver.wait_for(lambda got: len(got) == 1)
        last = await charge(client, user, 150)  # 100 %
        await receiver.wait_for(lambda got: len(got) == 2)
        # More settlements of the month (a repeated one, as a gateway's retry sends), then
        # another user's crossing: once that one is in, the repeats were checked long before.
        for _ in range(3):
            await settle(client, settlement_body(user, last, 150, 0))
        await charge(client, sentinel, 600)
        got = await receiver.wait_for(lambda got: bool(events_of(got, sentinel)))
        log = await deliveries(client, user)
    mine = events_of(got, user)
    assert [r.event["data"]["threshold"] for r in mine] == [80, 100]
    assert [r.event["data"]["usedTokens"] for r in mine] == [850, 1000]
    event = first[0].event
    assert event["type"] == "quota.threshold_crossed"
    assert event["data"] == {
        "userId": user,
        "period": event["data"]["period"],
        "threshold": 80,
        "usedTokens": 850,
        "monthlyLimit": 1000,
    }
    for received in mine:
        assert received.path == "/hooks?token=abc"
        assert received.headers["content-type"] == "application/json"
        assert received.headers["webhook-id"] == received.event["id"]
        assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 60
        assert verified(received, secret)
        assert not verified(received, GLOBAL_SECRET)
    assert [(d["threshold"], d["status"], d["attempts"]) for d in log] == [
        (100, "delivered", 1),
        (80, "delivered", 1),
    ]
    assert log[1]["eventId"] == mine[0].event["id"]
    assert log[1]["history"][0]["statusCode"] == 204


async def test_a_receiver_failing_three_times_gets_the_event_on_the_fourth_attempt(
    open_app: OpenApp,
    receiver: WebhookReceiver,
) -> None:
    receiver.fail_next(3)
    async with open_app() as client:
        user = new_user()
        assert (await put_webhook(client, user, receiver.url, [50])).status_code == 200
        await charge(client, user, 600)
        got = await receiver.wait_for(lambda got: any(r.status == 204 for r in got))
        # The receiver's 204 comes before the sender records it: read the log once it has.
        log = await until(
            lambda: deliveries(client, user), lambda log: log[0]["status"] != "pending"
        )
        metrics = (await client.get("/metrics")).text
    assert [r.status for r in got] == [500, 500, 500, 204]
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert len({r.body for r in got}) == 1  # the same event, byte for byte
    [delivery] = log
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 4
    assert [a["statusCode"] for a in delivery["history"]] == [500, 500, 500, 204]
    assert delivery["lastStatusCode"] == 204
    assert delivery["deliveredAt"] is not None
    assert delivery["nextAttemptAt"] is None
    assert sample(metrics, "infergate_webhook_deliveries_total", outcome="retry") == 3
    assert sample(metrics, "infergate_webhook_deliveries_total", outcome="delivered") == 1
    assert sample(metrics, "infergate_webhook_deliveries_total", outcome="failed") == 0


async def test_an_event_never_answered_2xx_is_failed_at_its_maximum_age(
    open_app: OpenApp,
    receiver: WebhookReceiver,
) -> None:
    receiver.fail_next(10_000, status=503)
    async with open_app(quota_webhook_max_age_seconds=0.5) as client:
        user = new_user()
        assert (await put_webhook(client, user, receiver.url, [50])).status_code == 200
        await charge(client, user, 600)
        log = await until(
            lambda: deliveries(client, user), lambda log: bool(log) and log[0]["status"] == "failed"
        )
        metrics = (await client.get("/metrics")).text
    [delivery] = log
    assert delivery["status"] == "failed"
    assert delivery["lastStatusCode"] == 503
    assert delivery["attempts"] == len(receiver.requests()) >= 2
    assert sample(metrics, "infergate_webhook_deliveries_total", outcome="failed") == 1
    assert sample(metrics, "infergate_webhook_deliveries_total", outcome="delivered") == 0


async def test_the_pending_gauge_counts_events_not_yet_delivered(
    open_app: OpenApp,
    receiver: WebhookReceiver,
) -> None:
    receiver.fail_next(10_000)
    async with open_app() as client:

        async def gauge() -> float | None:
            return sample((await client.get("/metrics")).text, "infergate_webhook_events_pending")

        user = new_user()
        assert (await put_webhook(client, user, receiver.url, [50])).status_code == 200
        await charge(client, user, 600)
        await receiver.wait_for(lambda got: len(got) >= 2)
        assert await until(gauge, lambda value: value == 1) == 1
        receiver.succeed()
        await receiver.wait_for(lambda got: got[-1].status == 204)
        assert await until(gauge, lambda value: value == 0) == 0


async def test_a_redirect_is_not_followed(
    open_app: OpenApp,
    receiver: WebhookReceiver,
) -> None:
    receiver.fail_next(1, status=307)  # a redirect that keeps the method and the body
    async with open_app() as client:
        user = new_user()
        assert (await put_webhook(client, user, f"{receiver.url}/hook", [50])).status_code == 200
        await charge(client, user, 600)
        got = await receiver.wait_for(lambda got: any(r.status == 204 for r in got))
    assert [(r.path, r.status) for r in got] == [("/hook", 307), ("/hook", 204)]


async def test_the_operators_global_webhook_receives_every_users_crossings(
    open_app: OpenApp,
    receiver: WebhookReceiver,
) -> None:
    async with open_app(
        quota_webhook_url=f"{receiver.url}/global",
        quota_webhook_secret=GLOBAL_SECRET,
        quota_webhook_thresholds=[50],
    ) as client:
        without, with_own = new_user(), new_user()
        mine = await put_webhook(client, with_own, f"{receiver.url}/mine", [80])
        await charge(client, without, 600)
        await charge(client, with_own, 900)
        got = await receiver.wait_for(lambda got: len(got) == 3)
        own_log = await deliveries(client, with_own)
    by_place = sorted(
        (r.path, r.event["data"]["userId"], r.event["data"]["threshold"]) for r in got
    )
    assert by_place == sorted(
        [("/global", without, 50), ("/global", with_own, 50), ("/mine", with_own, 80)]
    )
    for received in got:
        secret = GLOBAL_SECRET if received.path == "/global" else mine.json()["secret"]
        assert verified(received, secret)
    assert [d["threshold"] for d in own_log] == [80]  # the operator's deliveries are not shown


async def test_urls_that_reach_inside_are_refused_unless_allowed(
    open_app: OpenApp,
    receiver: WebhookReceiver,
) -> None:
    user = new_user()
    refused = [
        f"http://127.0.0.1:{receiver.port + 1}/",  # the allowance names one port
        "http://localhost/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "ftp://93.184.215.14/",
        "https://user:secret@93.184.215.14/",
        "http:///no-host",
    ]
    async with open_app() as client:
        for url in refused:
            response = await put_webhook(client, user, url)
            assert response.status_code == 400, url
            assert response.json()["code"] == "webhook_url_refused", url
        answer = await put_webhook(client, user, "http://10.1.2.3/")
        assert "private address (10.1.2.3)" in answer.json()["message"]
        assert (await put_webhook(client, user, "https://93.184.215.14/hook")).status_code == 200
        assert (await put_webhook(client, user, receiver.url)).status_code == 200
    async with open_app(quota_webhook_allow_private=True) as client:
        assert (await put_webhook(client, user, "http://10.1.2.3/")).status_code == 200


async def test_a_delivery_checks_the_address_again(
    open_app: OpenApp,
    receiver: WebhookReceiver,
    db: Any,
) -> None:
    """The host was public when the URL was set; now it resolves to loopback: not sent."""
    async with open_app() as client:
        user = new_user()
        assert (await put_webhook(client, user, "https://93.184.215.14/", [50])).status_code == 200
        await db["webhooks"].update_one(
            {"_id": user}, {"$set": {"url": f"http://localhost:{receiver.port}/"}}
        )
        await charge(client, user, 600)
        log = await until(
            lambda: deliveries(client, user), lambda log: bool(log) and log[0]["attempts"] >= 2
        )
    assert log[0]["status"] == "pending"
    assert "loopback address" in log[0]["lastError"]
    assert log[0]["lastStatusCode"] is None
    assert receiver.requests() == []


async def test_webhook_settings_read_rotate_and_delete(
    open_app: OpenApp,
    receiver: WebhookReceiver,
) -> None:
    user = new_user()
    path = f"/usage/{user}/webhook"
    async with open_app() as client:
        assert (await client.get(path, headers=HEADERS)).status_code == 404
        for bad in ([0], [101], ["80"], [], [80.5]):
            answer = await put_webhook(client, user, receiver.url, bad)
            assert answer.status_code == 400, bad
        first = (await put_webhook(client, user, receiver.url)).json()
        again = await put_webhook(client, user, receiver.url, [100, 50, 50])
        assert "secret" not in again.json()
        shown = (await client.get(path, headers=HEADERS)).json()
        assert shown["thresholds"] == [50, 100]
        assert "secret" not in shown
        rotated = (await client.post(f"{path}/secret", headers=HEADERS)).json()
        assert rotated["secret"] != first["secret"]
        await charge(client, user, 600)
        [received] = await receiver.wait_for(lambda got: len(got) == 1)
        assert verified(received, rotated["secret"])
        assert not verified(received, first["secret"])
        assert (await client.delete(path, headers=HEADERS)).status_code == 200
        assert (await client.get(path, headers=HEADERS)).status_code == 404
        assert (await client.delete(path, headers=HEADERS)).status_code == 404
        assert (await client.post(f"{path}/secret", headers=HEADERS)).status_code == 404
        assert (await client.get(path)).status_code == 401  # the internal token is required
