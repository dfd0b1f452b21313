"""Real Redis topologies for the gateway's tests: a Redis Cluster (primaries with replicas) and a
primary with a replica watched by a Sentinel, each redis-server on free loopback ports with its
data in a temporary directory.

Processes are the devstack's own (`ManagedProcess`: own process group, log file, stopped on exit);
every wait is a poll with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from infergate_devstack.install import require_program
from infergate_devstack.ports import HOST, free_ports
from infergate_devstack.probes import redis_ping
from infergate_devstack.processes import ManagedProcess, ProcessSpec, stop_together
from redis.crc import key_slot

NODE_TIMEOUT_MS = 1000  # cluster-node-timeout, and the Sentinel's down-after-milliseconds
SENTINEL_MASTER = "infergate"
_POLL_S = 0.05
_DEADLINE_S = 30.0


@dataclass(frozen=True)
class RedisServer:
    port: int
    process: ManagedProcess

    def client(self) -> redis.Redis:
        """A plain client of this one server (for checks; not cluster-aware)."""
        return redis.Redis(host=HOST, port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def kill(self) -> None:
        """SIGKILL, at once (reaped by the deployment's stop)."""
        self.process.send_stop(kill=True)


def wait_for(what: str, check: Callable[[], bool], *, timeout_s: float = _DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s:.0f} s")
        time.sleep(_POLL_S)


async def wait_for_async(
    what: str, check: Callable[[], Awaitable[bool]], *, timeout_s: float = _DEADLINE_S
) -> float:
    """Poll `check` until it is true; the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what}: not after {timeout_s:.0f} s")
        await asyncio.sleep(_POLL_S)
    return time.monotonic() - started


def _server(
    root: Path, name: str, port: int, options: list[str], *, storage: bool = True
) -> RedisServer:
    data = root / name
    data.mkdir(parents=True, exist_ok=True)
    argv = [str(require_program("redis-server")), *options]
    argv += ["--port", str(port), "--bind", HOST, "--dir", str(data)]
    if storage:
        # No persistence; a replica syncs at once (not after the default 5 s wait for others).
        argv += ["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"]
    spec = ProcessSpec(
        name=name,
        argv=argv,
        env=dict(os.environ),
        log_path=root / f"{name}.log",
        ready=functools.partial(redis_ping, port),
    )
    return RedisServer(port, ManagedProcess(spec, pid_dir=root))


def _start(servers: list[RedisServer]) -> None:
    for server in servers:
        server.process.spawn()
    for server in servers:
        server.process.wait_ready()


class RedisClusterDeployment:
    """`primaries` primaries with `replicas` replicas each, made by `redis-cli --cluster create`.
    `require_full_coverage`: Redis' cluster-require-full-coverage (its default is yes: every
    node refuses every command while any slot is unserved, as during a failover)."""

    def __init__(
        self, root: Path, *, primaries: int, replicas: int, require_full_coverage: bool
    ) -> None:
        count = primaries * (1 + replicas)
        ports = free_ports(2 * count)  # each node's port and its cluster bus port
        options = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        options += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS)]
        options += ["--cluster-require-full-coverage", "yes" if require_full_coverage else "no"]
        self.replicas = replicas
        self.servers = [
            _server(root, f"cluster-{port}", port, [*options, "--cluster-port", str(bus)])
            for port, bus in zip(ports[:count], ports[count:], strict=True)
        ]

    @property
    def seed_port(self) -> int:
        return self.servers[0].port

    def start(self) -> None:
        _start(self.servers)
        create = [str(require_program("redis-cli")), "--cluster", "create"]
        create += [f"{HOST}:{server.port}" for server in self.servers]
        create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        self.wait_healthy()

    def stop(self) -> None:
        stop_together([server.process for server in self.servers], kill=True)

    def live(self) -> list[RedisServer]:
        return [server for server in self.servers if server.process.running()]

    def by_port(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def wait_healthy(self) -> None:
        """Every node up, agreeing on the whole cluster (state ok, no node failed), and every
        replica in sync with its primary."""
        wait_for("cluster healthy", self._healthy)

    def _healthy(self) -> bool:
        try:
            for server in self.servers:
                with server.client() as node:
                    info = node.execute_command("CLUSTER INFO")
                    table = node.execute_command("CLUSTER NODES")
                    replication = node.info("replication")
                if info["cluster_state"] != "ok" or len(table) != len(self.servers):
                    return False
                flags = ",".join(str(entry["flags"]) for entry in table.values())
                if "fail" in flags or "handshake" in flags or "noaddr" in flags:
                    return False
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
        except redis.RedisError:
            return False
        return True

    def primaries(self) -> list[int]:
        """The ports of the live primaries that serve slots."""
        with self.live()[0].client() as node:
            table = node.execute_command("CLUSTER NODES")
        return sorted(
            int(address.rsplit(":", 1)[1].split("@")[0])
            for address, entry in table.items()
            if "master" in entry["flags"] and "fail" not in entry["flags"] and entry["slots"]
        )

    def owners(self, keys: list[str]) -> dict[str, int | None]:
        """The port of the primary that serves each key's slot, as a live node sees it now
        (None: no live node answered, or the slot is not served)."""
        table: list[tuple[int, int, int]] = []
        for server in self.live():
            try:
                with server.client() as node:
                    slots = node.execute_command("CLUSTER SLOTS")
            except redis.RedisError:
                continue
            table = [(int(start), int(end), int(primary[1])) for start, end, primary, *_ in slots]
            break
        found: dict[str, int | None] = {}
        for key in keys:
            slot = key_slot(key.encode())
            found[key] = next((port for lo, hi, port in table if lo <= slot <= hi), None)
        return found

    def state_ok(self, port: int) -> bool:
        try:
            with self.by_port(port).client() as node:
                return bool(node.execute_command("CLUSTER INFO")["cluster_state"] == "ok")
        except redis.RedisError:
            return False

    def keys_on(self, port: int) -> int:
        with self.by_port(port).client() as node:
            return int(node.dbsize())


@contextmanager
def running_cluster(
    root: Path, *, primaries: int = 3, replicas: int = 1, require_full_coverage: bool = False
) -> Iterator[RedisClusterDeployment]:
    cluster = RedisClusterDeployment(
        root, primaries=primaries, replicas=replicas, require_full_coverage=require_full_coverage
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@dataclass(frozen=True)
class SentinelDeployment:
    """A primary, its replica, and one Sentinel monitoring them as SENTINEL_MASTER (quorum 1)."""

    primary: RedisServer
    replica: RedisServer
    sentinel: RedisServer

    @property
    def address(self) -> str:
        """REDIS_SENTINELS for the gateway."""
        return f"{HOST}:{self.sentinel.port}"

    def primary_port(self) -> int | None:
        """The primary's port as the Sentinel names it now."""
        try:
            with self.sentinel.client() as sentinel:
                found = sentinel.execute_command(
                    "SENTINEL GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER
                )
        except redis.RedisError:
            return None
        return int(found[1]) if found else None


@contextmanager
def running_sentinel(root: Path) -> Iterator[SentinelDeployment]:
    primary_port, replica_port, sentinel_port = free_ports(3)
    primary = _server(root, f"primary-{primary_port}", primary_port, [])
    replica = _server(
        root, f"replica-{replica_port}", replica_port, ["--replicaof", HOST, str(primary_port)]
    )
    config = root / "sentinel.conf"  # a Sentinel rewrites its own configuration file
    config.write_text(
        f"sentinel monitor {SENTINEL_MASTER} {HOST} {primary_port} 1\n"
        f"sentinel down-after-milliseconds {SENTINEL_MASTER} {NODE_TIMEOUT_MS}\n"
        f"sentinel failover-timeout {SENTINEL_MASTER} 3000\n"
    )
    sentinel = _server(
        root, f"sentinel-{sentinel_port}", sentinel_port, [str(config), "--sentinel"], storage=False
    )
    deployment = SentinelDeployment(primary, replica, sentinel)
    servers = [primary, replica, sentinel]
    try:
        _start([primary, replica])
        wait_for("replica in sync", lambda: _linked(replica))
        _start([sentinel])
        wait_for("the Sentinel knows the replica", lambda: _knows_replica(sentinel))
        yield deployment
    finally:
        stop_together([server.process for server in servers], kill=True)


def _linked(replica: RedisServer) -> bool:
    try:
        with replica.client() as node:
            return bool(node.info("replication").get("master_link_status") == "up")
    except redis.RedisError:
        return False


def _knows_replica(sentinel: RedisServer) -> bool:
    try:
        with sentinel.client() as node:
            return bool(node.execute_command("SENTINEL REPLICAS", SENTINEL_MASTER))
    except redis.RedisError:
        return False
