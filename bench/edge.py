"""`python -m bench edge`: does the public edge hold while other hosts abuse it?

A normal client (wrk, a few connections from 127.0.0.1) chats through nginx for a while; then the
same again while two abusive "hosts" (other loopback addresses, so nginx counts them apart) hold
2,000 idle keep-alive connections (each sent one request, then went quiet; reopened when nginx
closes them) and 200 slowloris connections (request headers trickled a byte every 2 s; reopened
when cut off). The report is the normal client's latency and errors with and without the abuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.facts import code_version, machine
from bench.points import Options
from bench.run import prepared_stack
from bench.stack import progress
from bench.wrk import Target, run_wrk

IDLE_CONNECTIONS = 2000
SLOWLORIS_CONNECTIONS = 200
IDLE_HOST = "127.0.0.2"
SLOW_HOST = "127.0.0.3"
NORMAL_CONCURRENCY = 4


@dataclass
class Abuse:
    """The abusers, on their own event loop in a thread while wrk measures."""

    host: str
    port: int
    opened: int = 0
    open_now: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Abuse:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while self.open_now < IDLE_CONNECTIONS * 0.9 and time.monotonic() < deadline:
            time.sleep(0.2)
        progress(f"abuse: {self.open_now} idle and slowloris connections open")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    async def _run(self) -> None:
        idle = [self._hold(IDLE_HOST, slow=False) for _ in range(IDLE_CONNECTIONS)]
        slow = [self._hold(SLOW_HOST, slow=True) for _ in range(SLOWLORIS_CONNECTIONS)]
        await asyncio.gather(*idle, *slow)

    async def _hold(self, source: str, *, slow: bool) -> None:
        """One abusive connection, reopened whenever nginx closes it, until stopped."""
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, local_addr=(source, 0)
                )
            except OSError:
                await asyncio.sleep(0.5)
                continue
            self.opened += 1
            self.open_now += 1
            try:
                await (self._trickle(reader, writer) if slow else self._idle(reader, writer))
            except OSError:
                pass
            finally:
                self.open_now -= 1
                writer.close()

    async def _idle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
        await writer.drain()
        await reader.read(4096)  # the answer; then the connection idles in keep-alive
        while not self._stop.is_set() and not reader.at_eof():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1), timeout=1.0)

    async def _trickle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /v1/usage HTTP/1.1\r\nHost: edge\r\nX-Slow: ")
        while not self._stop.is_set() and not reader.at_eof():
            writer.write(b"z")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1), timeout=2.0)


def run_edge(options: Options) -> dict[str, Any]:
    """The normal client's chats without, then with, the abuse. The per-client limits stay
    out of the way (the normal client is not the one abusing); what holds is connection room and
    the timeouts, which are nginx's defaults here."""
    with prepared_stack(options) as prepared:
        chat: Target = prepared.targets["chat"]
        port = int(prepared.bench.stack.public_url.rsplit(":", 1)[1])
        phases = {}
        for phase in ("quiet", "abused"):
            abuse = Abuse("127.0.0.1", port) if phase == "abused" else contextlib.nullcontext()
            with abuse:
                run_wrk(chat, concurrency=NORMAL_CONCURRENCY, seconds=options.warmup_s)
                result = run_wrk(chat, concurrency=NORMAL_CONCURRENCY, seconds=options.duration_s)
            phases[phase] = {
                **result.as_dict(),
                **(
                    {"abusive_connections_opened": abuse.opened} if isinstance(abuse, Abuse) else {}
                ),
            }
            progress(
                f"edge {phase:7} {result.rps:7.1f} req/s  p50 {result.p50_ms:7.2f}  p99"
                f" {result.p99_ms:7.2f} ms  errors {result.errors}"
            )
    return {
        "kind": "edge",
        "machine": machine(),
        "code": code_version(),
        "idle_connections": IDLE_CONNECTIONS,
        "slowloris_connections": SLOWLORIS_CONNECTIONS,
        "normal_concurrency": NORMAL_CONCURRENCY,
        "phases": phases,
    }


def edge_table(results: dict[str, Any]) -> str:
    lines = [f"{'phase':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}"]
    for phase, run in results["phases"].items():
        lines.append(
            f"{phase:8} {run['rps']:8.1f} {run['p50_ms']:8.2f} {run['p99_ms']:8.2f}"
            f" {run['errors']:7d}"
        )
    return "\n".join(lines)
