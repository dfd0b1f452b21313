"""`python -m infergate_devstack run | stop | install`: the local stack from a terminal.

Ports come from NGINX_PORT, GATEWAY_PORT, AUTH_PORT, USAGE_PORT, AI_PORT, REDIS_PORT, MONGO_PORT,
LLM_PORT, PROMETHEUS_PORT and NGINX_ADMIN_PORT (defaults 8080, 4000-4003, 6379, 27017, 11434,
9090, 8090; the operator listener on NGINX_ADMIN_PORT runs only with ADMIN_TOKEN; a service's
further replicas (`--replicas`) take free ports); OLLAMA_URL names
an Ollama to use instead of the embedded model. `run` starts Prometheus too, unless
`--no-observability` or INFERGATE_OBSERVABILITY=0. Every other variable reaches the services
unchanged, so `REGISTRATION_RATE_LIMIT=1000 make run` configures the gateway."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from infergate_devstack import install
from infergate_devstack.components.llm import llm_venv
from infergate_devstack.config import StackConfig, find_repo_root, print_progress
from infergate_devstack.plan import REPLICATED
from infergate_devstack.ports import HOST, PortInUseError, Ports
from infergate_devstack.processes import StartupError, kill_leftovers
from infergate_devstack.runfile import AlreadyRunningError, RunFile
from infergate_devstack.stack import Stack
from infergate_devstack.summary import format_summary

# What a user can fix from the message alone: printed without a traceback.
_USER_ERRORS = (
    PortInUseError,
    StartupError,
    install.InstallError,
    AlreadyRunningError,
    TimeoutError,
)
# Two gateways by default: one per core of the machines the figures in the README come from.
DEFAULT_GATEWAYS = 2
_MAX_REPLICAS = 16
# INFERGATE_OBSERVABILITY values that turn Prometheus off.
_OFF = frozenset({"0", "false", "no", "off"})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data_dir: Path = args.data_dir.resolve()
    try:
        if args.command == "run":
            observability = observability_wanted(
                disabled_by_flag=args.no_observability, environ=os.environ
            )
            replicas = {"gateway": DEFAULT_GATEWAYS, **args.replicas}
            if args.gateway_replicas is not None:
                replicas["gateway"] = args.gateway_replicas
            return run(data_dir, replicas=replicas, observability=observability)
        if args.command == "stop":
            return stop(data_dir)
        return install_prerequisites(with_llm=args.llm, with_browser=args.browser)
    except _USER_ERRORS as exc:
        print(f"devstack: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infergate_devstack", description=__doc__)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=find_repo_root() / ".data",
        help="logs, database files, nginx config (default: <repo>/.data)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="start the stack and wait for Ctrl-C")
    run_parser.add_argument(
        "--replicas",
        type=parse_replicas,
        default={},
        metavar="SERVICE=N,...",
        help=(
            "processes per service, e.g. gateway=2,auth=2,usage=2,ai=2 (default: two gateways, "
            "one of each other service)"
        ),
    )
    run_parser.add_argument(
        "--gateway-replicas", type=int, default=None, metavar="N", help="the same as gateway=N"
    )
    run_parser.add_argument(
        "--no-observability",
        action="store_true",
        help="do not start Prometheus (also INFERGATE_OBSERVABILITY=0)",
    )
    commands.add_parser("stop", help="stop a stack started by `run`")
    install_parser = commands.add_parser("install", help="install missing prerequisites")
    install_parser.add_argument(
        "--llm", action="store_true", help="also build the embedded LLM runtime (compiles)"
    )
    install_parser.add_argument(
        "--browser",
        action="store_true",
        help="also install Chromium (apt) for the web console's browser tests",
    )
    return parser


def parse_replicas(text: str) -> dict[str, int]:
    """`gateway=2,auth=2` -> {"gateway": 2, "auth": 2} (argparse reports a ValueError)."""
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        service, _, count = item.partition("=")
        if service not in REPLICATED:
            raise argparse.ArgumentTypeError(
                f"unknown service {service!r} in --replicas; known: {', '.join(REPLICATED)}"
            )
        if not count.isdigit() or not 1 <= int(count) <= _MAX_REPLICAS:
            raise argparse.ArgumentTypeError(
                f"--replicas {service}= needs a whole number from 1 to {_MAX_REPLICAS}"
            )
        counts[service] = int(count)
    return counts


def observability_wanted(*, disabled_by_flag: bool, environ: Mapping[str, str]) -> bool:
    """Prometheus runs unless `--no-observability` or INFERGATE_OBSERVABILITY is 0/false/no/off."""
    setting = environ.get("INFERGATE_OBSERVABILITY", "1").strip().lower()
    return not disabled_by_flag and setting not in _OFF


def run(data_dir: Path, *, replicas: Mapping[str, int], observability: bool) -> int:
    """Start everything, print the summary, wait for Ctrl-C or SIGTERM, stop everything."""
    runfile = RunFile(data_dir)
    runfile.claim()
    ports = Ports.from_env()
    config = StackConfig(
        data_dir=data_dir,
        ports=ports,
        ollama_url=os.environ.get("OLLAMA_URL") or f"http://{HOST}:{ports.llm}",
        replicas=dict(replicas),
        observability=observability,
    )
    stack = Stack(config)
    # Both explicitly: a shell starting us in the background may have left SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        stack.up()
        print(format_summary(stack, startup_s=time.monotonic() - started), flush=True)
        _watch(stack)
    except KeyboardInterrupt:
        print_progress("stopping")
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.down()
        runfile.release()
    print_progress("stopped")
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _watch(stack: Stack) -> None:
    """Wait for a signal, reporting any process that exits on its own meanwhile."""
    reported: set[str] = set()
    while True:
        time.sleep(1.0)
        for name in set(stack.exited()) - reported:
            reported.add(name)
            print_progress(f"warning: {name} exited; see {stack.log_path(name)}")


def stop(data_dir: Path) -> int:
    """Stop the `run` recorded in data_dir, then anything an earlier crash left running."""
    pid = RunFile(data_dir).stop_running()
    leftovers = kill_leftovers(data_dir / "pids")
    if pid is not None:
        print_progress(f"stopped the stack (pid {pid})")
    if leftovers:
        print_progress(f"stopped leftover processes: {', '.join(leftovers)}")
    if pid is None and not leftovers:
        print_progress(f"no stack running from {data_dir}")
    return 0


def install_prerequisites(*, with_llm: bool, with_browser: bool) -> int:
    install.ensure_all(print_progress)
    if with_llm:
        llm_venv().ensure_llm_venv(find_repo_root(), progress=print_progress)
    if with_browser:
        install.ensure_browser(print_progress)
    print_progress("prerequisites installed")
    return 0
