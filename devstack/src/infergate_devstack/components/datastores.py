"""Redis (Debian's redis-server) and the MongoDB stand-in (SecantusDB, in its own venv), each with
credentials: Redis with an ACL (the default user off; `gateway` limited to the commands and keys
the gateway uses; `admin` for operators), SecantusDB with SCRAM users (root, and one per service
database with only readWrite on it)."""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pymongo

from infergate_devstack.ports import HOST, free_ports
from infergate_devstack.probes import mongo_ping, redis_ping
from infergate_devstack.processes import ManagedProcess, ProcessSpec
from infergate_devstack.stack_secrets import StackSecrets

REDIS_GATEWAY_USER = "gateway"
REDIS_ADMIN_USER = "admin"
# The gateway's commands (its own and those its Lua scripts run) and key patterns, nothing else.
_GATEWAY_COMMANDS = (
    "+ping +get +set +mget +exists +eval +evalsha +script|load +multi +exec "
    "+zadd +zrem +zcard +zrange +zrangebyscore +zremrangebyscore +zpopmin +del +pexpire +time "
    "+hset +hget +hdel +hlen"
)
_GATEWAY_KEYS = "~infergate:* ~rate_limit:* ~keyver:* ~keydoubt:*"


@dataclass(frozen=True)
class RedisUsers:
    gateway_password: str
    admin_password: str

    def acl(self) -> str:
        return (
            "user default off\n"
            f"user {REDIS_GATEWAY_USER} on >{self.gateway_password} {_GATEWAY_KEYS} "
            f"resetchannels -@all {_GATEWAY_COMMANDS}\n"
            f"user {REDIS_ADMIN_USER} on >{self.admin_password} ~* &* +@all\n"
        )


def redis_spec(
    *, program: Path, port: int, data_dir: Path, log_path: Path, users: RedisUsers | None = None
) -> ProcessSpec:
    """Redis keeping what it acknowledges in an append-only file (fsync every second) in
    `data_dir`: the settlement outbox must survive a restart. No RDB snapshots. With `users`,
    an ACL (no access without a password); without, open (the unit tests' own Redis)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [str(program), "--port", str(port), "--bind", HOST, "--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]
    argv += ["--dir", str(data_dir)]
    credentials = None
    if users is not None:
        acl = data_dir.parent / "redis-users.acl"
        descriptor = os.open(acl, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(users.acl())
        argv += ["--aclfile", str(acl)]
        credentials = (REDIS_ADMIN_USER, users.admin_password)
    return ProcessSpec(
        name="redis",
        argv=argv,
        env=dict(os.environ),
        log_path=log_path,
        ready=functools.partial(redis_ping, port, credentials=credentials),
    )


# Without --standalone, SecantusDB answers `hello` as the primary of a one-member replica set of
# this name, so the services run as against a `mongod --replSet`: majority writes and reads.
MONGO_REPLICA_SET = "secantus"


def mongo_uri(
    port: int,
    database: str | None = None,
    *,
    user: str | None = None,
    password: str = "",
    retry_writes: bool = False,
) -> str:
    """A replica-set URI of the local SecantusDB (the services add majority writes and reads).

    Two options for this server (measured with 0.7.0b3 and PyMongo 4.20):
    * serverMonitoringMode=poll: SecantusDB answers a waiting (streaming) `hello` when it steps
      down but not when it is primary again, so a streaming client finds the primary only after
      heartbeatFrequencyMS (10 s); a polling one checks every 0.5 s while an operation waits.
    * retryWrites=false unless `retry_writes`: SecantusDB keeps its last 10,000 retryable-write
      replies in memory and scans them on each retryable write, so an update's 1 ms grows to
      16-19 ms once 10,000 are kept (for 30 minutes), and it forgets them on a restart. The
      services' writes may be repeated anyway (conditional filters, unique ids); production
      URIs keep PyMongo's retryable writes (on unless the URI turns them off)."""
    login = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
    options = f"replicaSet={MONGO_REPLICA_SET}&serverMonitoringMode=poll"
    options += "" if retry_writes else "&retryWrites=false"
    options += "&authSource=admin" if user and not database else ""
    return f"mongodb://{login}{HOST}:{port}/{database or ''}?{options}"


@dataclass(frozen=True)
class MongoUsers:
    root_password: str
    auth_password: str
    usage_password: str

    @classmethod
    def of(cls, secrets: StackSecrets) -> MongoUsers:
        """The users of a stack with these secrets."""
        return cls(
            root_password=secrets.mongo_root_password,
            auth_password=secrets.mongo_auth_password,
            usage_password=secrets.mongo_usage_password,
        )

    def service_uri(self, port: int, service: str) -> str:
        """auth's or usage's URI: its own user, who can only read and write its database."""
        password = self.auth_password if service == "auth" else self.usage_password
        return mongo_uri(port, f"infergate-{service}", user=f"{service}-service", password=password)

    def root_uri(self, port: int) -> str:
        return mongo_uri(port, user="root", password=self.root_password)


def mongo_spec(
    *, program: Path, port: int, data_dir: Path, log_path: Path, users: MongoUsers | None = None
) -> ProcessSpec:
    """SecantusDB, with its data kept in `data_dir` across restarts; with `users`, requiring
    authentication (they are created on the first start: `provision_mongo`)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [*_secantus_argv(program, data_dir), "--port", str(port)]
    if users is not None:
        argv.append("--auth")
    return ProcessSpec(
        name="mongo",
        argv=argv,
        env=dict(os.environ),
        log_path=log_path,
        ready=functools.partial(mongo_ping, mongo_uri(port)),
    )


def scratch_mongo(
    program: Path, root: Path, port: int, *, extra_args: tuple[str, ...] = ()
) -> ManagedProcess:
    """A SecantusDB of its own for tests and benchmarks (data and log under `root`, no users),
    not started yet: `spawn()` then `wait_ready()`, `stop()` when done."""
    spec = mongo_spec(
        program=program, port=port, data_dir=root / "mongo", log_path=root / "mongo.log"
    )
    spec = dataclasses.replace(spec, argv=[*spec.argv, *extra_args])
    return ManagedProcess(spec, pid_dir=root)


def _secantus_argv(program: Path, data_dir: Path) -> list[str]:
    # An explicit (empty) config file turns off SecantusDB's discovery of ./secantusd.toml,
    # ~/.secantus/ and /etc/secantus/, so no stray file changes the stack's server.
    config = data_dir.parent / "secantusd.toml"
    config.write_text("# Settings are the command-line flags of infergate_devstack.\n")
    argv = [str(program), "--config", str(config), "--host", HOST]
    # No --standalone: a one-member replica set (MONGO_REPLICA_SET), whose member is HOST:port.
    return [*argv, "--storage-path", str(data_dir), "--log-level", "WARNING"]


def provision_mongo(*, program: Path, data_dir: Path, users: MongoUsers, log_path: Path) -> bool:
    """Create the users in a data directory that has none yet (SecantusDB creates users only
    while it runs without --auth): a short run on a free port. False when already done."""
    marker = data_dir / ".infergate-users"
    if marker.exists():
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    with log_path.open("ab") as log:
        server = subprocess.Popen(
            [*_secantus_argv(program, data_dir), "--port", str(port)], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 30
        while not mongo_ping(mongo_uri(port)):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SecantusDB did not start to create users; see {log_path}")
            time.sleep(0.05)
        _create_users(port, users)
    finally:
        server.terminate()
        server.wait(timeout=30)
    marker.write_text("root, auth-service, usage-service\n")
    return True


def _create_users(port: int, users: MongoUsers) -> None:
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(mongo_uri(port))
    try:
        root = [{"role": "root", "db": "admin"}]
        client.admin.command("createUser", "root", pwd=users.root_password, roles=root)
        for service, password in (("auth", users.auth_password), ("usage", users.usage_password)):
            database = f"infergate-{service}"
            roles = [{"role": "readWrite", "db": database}]
            client[database].command("createUser", f"{service}-service", pwd=password, roles=roles)
    finally:
        client.close()
