"""Readiness probes: cheap checks that never raise, used while waiting for a process."""

from __future__ import annotations

import socket

import httpx
import pymongo
import pymongo.errors

from infergate_devstack.ports import HOST

OLLAMA_BANNER = "Ollama is running"
_TIMEOUT_S = 1.0


def http_ok(url: str, *, body: str | None = None) -> bool:
    """GET `url` answers 200 (and, if given, exactly `body`)."""
    try:
        response = httpx.get(url, timeout=_TIMEOUT_S, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and (body is None or response.text.strip() == body)


def http_answers(url: str) -> bool:
    """Something speaking HTTP answers at `url`, whatever the status."""
    try:
        httpx.get(url, timeout=_TIMEOUT_S, trust_env=False)
    except httpx.HTTPError:
        return False
    return True


def ollama_running(url: str) -> bool:
    """An Ollama-protocol server answers at `url` (its root says "Ollama is running")."""
    return http_ok(url.rstrip("/") + "/", body=OLLAMA_BANNER)


def redis_ping(port: int, *, credentials: tuple[str, str] | None = None) -> bool:
    """Redis on 127.0.0.1:`port` answers PING with PONG (raw RESP: no client library needed),
    after AUTH with `credentials` (user, password) when given."""
    command = b"*1\r\n$4\r\nPING\r\n"
    if credentials is not None:
        command = _resp("AUTH", *credentials) + command
    try:
        with socket.create_connection((HOST, port), timeout=_TIMEOUT_S) as sock:
            sock.sendall(command)
            replies, answer = (2 if credentials else 1), b""
            while answer.count(b"\r\n") < replies:
                chunk = sock.recv(256)
                if not chunk:
                    break
                answer += chunk
            return answer.endswith(b"+PONG\r\n")
    except OSError:
        return False


def _resp(*words: str) -> bytes:
    encoded = [word.encode() for word in words]
    parts = [f"*{len(encoded)}\r\n".encode()]
    parts += [f"${len(word)}\r\n".encode() + word + b"\r\n" for word in encoded]
    return b"".join(parts)


def mongo_ping(uri: str) -> bool:
    """The MongoDB-protocol server at `uri` answers the ping command."""
    timeout_ms = int(_TIMEOUT_S * 1000)
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms
    )
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()
    return True
