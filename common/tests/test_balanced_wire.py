"""Replicas behind one wire, against real loopback HTTP servers: affinity keeps a user on one
replica, a refused connection moves the request to another (and that replica goes last for a
while), and a request that reached a replica is never sent to a second one."""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from infergate_common.balanced_wire import BalancedWire
from infergate_common.http_client import build_internal_client, replica_urls
from infergate_common.wire import AiohttpWire, WireRefusedError, WireUnavailableError
from pydantic import SecretStr


@dataclass
class Replica:
    name: str
    url: str
    hits: Counter[str]


async def _start(name: str, *, broken: bool = False) -> tuple[web.AppRunner, Replica]:
    hits: Counter[str] = Counter()

    async def answer(request: web.Request) -> web.StreamResponse:
        hits[request.path] += 1
        if broken:  # the request arrived; the connection dies before any answer
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError
        if request.path == "/stream":
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(json.dumps({"from": name}).encode() + b"\n")
            await response.write_eof()
            return response
        return web.json_response({"from": name})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, Replica(name, f"http://127.0.0.1:{port}", hits)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wire(url: str) -> AiohttpWire:
    return AiohttpWire(base_url=url, headers={}, seconds=5.0, max_connections=10)


@pytest.fixture
async def replicas() -> AsyncIterator[list[Replica]]:
    started = [await _start("a"), await _start("b")]
    yield [replica for _, replica in started]
    for runner, _ in started:
        await runner.cleanup()


async def _from(wire: BalancedWire, affinity: str | None, path: str = "/x") -> str:
    response = await wire.send("POST", path, json={}, params=None, seconds=None, affinity=affinity)
    return str(json.loads(response.body)["from"])


async def test_a_user_always_meets_the_same_replica_and_users_spread_over_all(
    replicas: list[Replica],
) -> None:
    wire = BalancedWire([_wire(r.url) for r in replicas])
    try:
        first = {f"user-{i}": await _from(wire, f"user-{i}") for i in range(40)}
        again = {user: await _from(wire, user) for user in first}
    finally:
        await wire.close()

    assert again == first
    assert set(first.values()) == {"a", "b"}
    assert {user: wire.route(user) for user in first} == {
        user: "ab".index(name) for user, name in first.items()
    }


async def test_requests_without_affinity_take_turns(replicas: list[Replica]) -> None:
    wire = BalancedWire([_wire(r.url) for r in replicas])
    try:
        names = [await _from(wire, None) for _ in range(10)]
    finally:
        await wire.close()

    assert Counter(names) == {"a": 5, "b": 5}


async def test_a_refusing_replica_is_routed_around_and_tried_last_for_a_while(
    replicas: list[Replica],
) -> None:
    now = [100.0]
    down = _wire(f"http://127.0.0.1:{_closed_port()}")
    wire = BalancedWire([down, _wire(replicas[0].url)], eject_seconds=2.0, clock=lambda: now[0])
    users = [f"user-{i}" for i in range(20)]
    homed_on_down = [user for user in users if wire.route(user) == 0]
    try:
        answers = [await _from(wire, user) for user in users]
        routes_while_ejected = {wire.route(user) for user in homed_on_down}
        now[0] += 2.5
        routes_after = {wire.route(user) for user in homed_on_down}
    finally:
        await wire.close()

    assert homed_on_down, "some users must hash to the refusing replica"
    assert answers == ["a"] * len(users)  # every request answered, by the replica that is up
    assert routes_while_ejected == {1}
    assert routes_after == {0}  # given another chance once the ejection ran out


async def test_when_every_replica_refuses_the_refusal_is_the_error() -> None:
    wire = BalancedWire([_wire(f"http://127.0.0.1:{_closed_port()}") for _ in range(2)])
    try:
        with pytest.raises(WireRefusedError):
            await _from(wire, "user-1")
    finally:
        await wire.close()


async def test_a_request_that_reached_a_replica_is_never_sent_to_another() -> None:
    broken_runner, broken = await _start("broken", broken=True)
    good_runner, good = await _start("good")
    wire = BalancedWire([_wire(broken.url), _wire(good.url)])
    user = next(f"user-{i}" for i in range(100) if wire.route(f"user-{i}") == 0)
    try:
        with pytest.raises(WireUnavailableError) as raised:
            await _from(wire, user, "/register")
    finally:
        await wire.close()
        await broken_runner.cleanup()
        await good_runner.cleanup()

    assert not isinstance(raised.value, WireRefusedError)
    assert broken.hits["/register"] == 1
    assert good.hits["/register"] == 0


async def test_a_stream_opens_on_the_replica_that_is_up(replicas: list[Replica]) -> None:
    wire = BalancedWire([_wire(f"http://127.0.0.1:{_closed_port()}"), _wire(replicas[1].url)])
    user = next(f"user-{i}" for i in range(100) if wire.route(f"user-{i}") == 0)
    try:
        async with wire.stream("/stream", json={}, affinity=user) as raw:
            body = b"".join([chunk async for chunk in raw.chunks])
    finally:
        await wire.close()

    assert raw.status == 200
    assert json.loads(body) == {"from": "b"}
    assert replicas[1].hits["/stream"] == 1


async def test_a_setting_may_list_replicas_and_one_url_is_one_plain_wire() -> None:
    token = SecretStr("x" * 16)
    one = build_internal_client(base_url="http://a:1", internal_token=token, timeout=1.0)
    two = build_internal_client(base_url="http://a:1,http://b:2", internal_token=token, timeout=1.0)
    await one.close()
    await two.close()

    assert replica_urls(" http://a:1/, http://b:2 ,") == ["http://a:1", "http://b:2"]
    with pytest.raises(ValueError, match="required"):
        replica_urls(" , ")
    assert isinstance(one, AiohttpWire)
    assert isinstance(two, BalancedWire)
