"""The server's settings: command-line flags over LOCAL_LLM_* environment variables.

The server runs in its own venv without pydantic-settings, so this is a small dataclass read
once at start-up; it is the only place that reads the environment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

REAL_MODEL_NAME = "smollm2:135m"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 11434
    # Names the server answers to besides REAL_MODEL_NAME (the gateway asks for `llama3`).
    aliases: tuple[str, ...] = ("llama3",)
    # Output cap when a request gives no num_predict, or a larger or negative one.
    max_tokens: int = 256
    n_ctx: int = 2048
    n_threads: int = 2
    log_level: str = "info"
    log_format: str = "auto"


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = int(raw)
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value


def _aliases(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ServerConfig.aliases
    return tuple(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))


def load_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> ServerConfig:
    """Build the configuration from flags (`--host`, `--port`, `--alias`) and the environment."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="python -m infergate_local_llm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument(
        "--alias",
        action="append",
        help="model name to answer to (repeatable; default: LOCAL_LLM_ALIASES or llama3)",
    )
    args = parser.parse_args(argv)
    return ServerConfig(
        host=args.host,
        port=args.port,
        aliases=tuple(args.alias) if args.alias else _aliases(env.get("LOCAL_LLM_ALIASES")),
        max_tokens=_positive_int(env, "LOCAL_LLM_MAX_TOKENS", ServerConfig.max_tokens),
        n_ctx=_positive_int(env, "LOCAL_LLM_CTX", ServerConfig.n_ctx),
        # llama-cpp-python's default is half the cores, which leaves one of two cores idle.
        n_threads=_positive_int(env, "LOCAL_LLM_THREADS", os.cpu_count() or 2),
        log_level=env.get("LOG_LEVEL", "info").lower(),
        log_format=env.get("LOG_FORMAT", "auto").lower(),
    )
