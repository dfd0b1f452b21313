"""Redis (Debian's redis-server) and the MongoDB stand-in (SecantusDB, in its own venv)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from infergate_devstack.ports import HOST
from infergate_devstack.probes import mongo_ping, redis_ping
from infergate_devstack.processes import ProcessSpec


def redis_spec(*, program: Path, port: int, data_dir: Path, log_path: Path) -> ProcessSpec:
    """Redis keeping what it acknowledges in an append-only file (fsync every second) in
    `data_dir`: the settlement outbox must survive a restart. No RDB snapshots."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [str(program), "--port", str(port), "--bind", HOST, "--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]
    argv += ["--dir", str(data_dir)]
    return ProcessSpec(
        name="redis",
        argv=argv,
        env=dict(os.environ),
        log_path=log_path,
        ready=functools.partial(redis_ping, port),
    )


def mongo_uri(port: int, database: str | None = None) -> str:
    return f"mongodb://{HOST}:{port}/{database or ''}?directConnection=true"


def mongo_spec(*, program: Path, port: int, data_dir: Path, log_path: Path) -> ProcessSpec:
    """SecantusDB, with its data kept in `data_dir` across restarts."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # An explicit (empty) config file turns off SecantusDB's discovery of ./secantusd.toml,
    # ~/.secantus/ and /etc/secantus/, so no stray file changes the stack's server.
    config = data_dir.parent / "secantusd.toml"
    config.write_text("# Settings are the command-line flags of infergate_devstack.\n")
    argv = [str(program), "--config", str(config), "--host", HOST, "--port", str(port)]
    argv += ["--storage-path", str(data_dir), "--standalone", "--log-level", "WARNING"]
    return ProcessSpec(
        name="mongo",
        argv=argv,
        env=dict(os.environ),
        log_path=log_path,
        ready=functools.partial(mongo_ping, mongo_uri(port)),
    )
