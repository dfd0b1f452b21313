"""The public edge under abuse, through nginx on a stack with small limits: per-client request and
connection limits, failed authentications per address, idle connections, and TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator

import httpx
import pytest
from infergate_devstack.stack import Stack

from tests.fake_ollama_fixtures import FakeOllamaControl, FakeOllamaProcess
from tests.helpers import local_stack, register

LIMITS = {
    "NGINX_REQUESTS_PER_SECOND": "5",
    "NGINX_REQUEST_BURST": "10",
    "NGINX_CONNECTIONS_PER_CLIENT": "3",
    "AUTH_FAILURE_RATE_LIMIT": "5",
    "REGISTRATION_RATE_LIMIT": "100",
    "FREE_RATE_LIMIT": "1000",
}


@pytest.fixture(scope="module")
def edge_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllamaProcess
) -> Iterator[Stack]:
    with local_stack(tmp_path_factory.mktemp("edge-limits"), fake_ollama.url, LIMITS) as stack:
        yield stack


def client_from(stack: Stack, address: str, **options: object) -> httpx.AsyncClient:
    """A client calling from its own loopback address: nginx counts each address apart, so each
    test has its own limits whatever the others did."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=stack.public_url, transport=transport, timeout=30)


async def test_a_client_over_its_request_rate_gets_429_json(edge_stack: Stack) -> None:
    async with client_from(edge_stack, "127.0.0.2") as client:
        answers = [await client.get("/healthz") for _ in range(30)]
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) <= 12  # the burst of 10 and what refilled meanwhile (5 a second)
    refused = answers[statuses.index(429)]
    assert refused.json()["code"] == "rate_limited"
    assert refused.headers["content-type"] == "application/json"
    async with client_from(edge_stack, "127.0.0.3") as other:
        assert (await other.get("/healthz")).status_code == 200  # another client is unaffected


async def test_a_client_cannot_hold_more_requests_in_progress_than_allowed(
    edge_stack: Stack, fake_ollama_control: FakeOllamaControl
) -> None:
    async with client_from(edge_stack, "127.0.0.4") as client:
        key = await register(client)
        await fake_ollama_control.configure(delay_s=1.5)
        chats = [
            client.post("/v1/chat", json={"prompt": "slow"}, headers={"x-api-key": key})
            for _ in range(6)
        ]
        statuses = sorted(r.status_code for r in await asyncio.gather(*chats))
    assert statuses.count(200) == 3  # NGINX_CONNECTIONS_PER_CLIENT
    assert set(statuses) == {200, 429}


async def test_an_address_that_keeps_presenting_wrong_keys_gets_429(edge_stack: Stack) -> None:
    wrong = "sk_" + "W" * 43
    async with client_from(edge_stack, "127.0.0.5") as client:
        answers = [await client.get("/test", headers={"x-api-key": wrong}) for _ in range(7)]
    statuses = [a.status_code for a in answers]
    assert statuses[:5] == [401] * 5  # AUTH_FAILURE_RATE_LIMIT
    assert statuses[5:] == [429, 429]
    assert answers[-1].json()["code"] == "auth_rate_limited"
    assert "retry-after" in answers[-1].headers


async def test_hundreds_of_idle_connections_leave_room_for_real_clients(
    edge_stack: Stack, fake_ollama_control: FakeOllamaControl
) -> None:
    port = int(edge_stack.public_url.rsplit(":", 1)[1])
    idle = []
    try:
        for _ in range(700):  # more than the whole old edge (one worker, 512 connections)
            sock = socket.socket()
            sock.bind(("127.0.0.6", 0))
            sock.connect(("127.0.0.1", port))
            idle.append(sock)
        async with client_from(edge_stack, "127.0.0.7") as client:
            key = await register(client)
            chat = await client.post("/v1/chat", json={"prompt": "hi"}, headers={"x-api-key": key})
        assert chat.status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_https_answers_with_the_stacks_certificate_over_http2(edge_stack: Stack) -> None:
    context = ssl.create_default_context(cafile=str(edge_stack.tls_ca))
    context.set_alpn_protocols(["h2", "http/1.1"])
    port = int(edge_stack.public_https_url.rsplit(":", 1)[1])
    with (
        socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=("127.0.0.8", 0)
        ) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}
    transport = httpx.HTTPTransport(verify=context, local_address="127.0.0.9")
    with httpx.Client(transport=transport, timeout=10) as client:
        response = client.get(f"{edge_stack.public_https_url}/healthz")
    assert response.json() == {"status": "ok"}


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")  # old on purpose
def test_https_refuses_old_protocols(edge_stack: Stack) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(edge_stack.tls_ca))
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    port = int(edge_stack.public_https_url.rsplit(":", 1)[1])
    with (
        socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=("127.0.0.10", 0)
        ) as raw,
        pytest.raises(ssl.SSLError) as refused,
    ):
        context.wrap_socket(raw, server_hostname="127.0.0.1")
    # nginx's answer (a protocol-version alert), not this client declining to offer TLS 1.1.
    assert "ALERT_PROTOCOL_VERSION" in str(refused.value).upper().replace(" ", "_")
