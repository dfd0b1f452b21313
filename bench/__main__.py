"""`python -m bench [--users N] [--duration S] [--warmup S] [--concurrency 1,8,32,64] [--scenarios
direct,healthz,chat,openai,litellm,litellm-2] ...`
`python -m bench soak [--minutes 5] [--concurrency 32] ...`
`python -m bench edge [--users 200]`: a normal client's chats with and without abusive hosts
`python -m bench telemetry [--rounds 2] [--sampled-ratios 0.01]`: metrics and tracing against off
`python -m bench backends [--backends 1,2,3] [--rounds 2]`: chat through 1, 2, 3 test LLMs
`python -m bench cache`: a response-cache hit against a miss (and an uncached chat)
`python -m bench hops [--chats 300]`: where one chat's time goes at c=1, hop by hop (traced)"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infergate_devstack.cli import parse_replicas

from bench.backends import run_backends
from bench.cache import run_cache
from bench.edge import edge_table, run_edge
from bench.hops import hops_table, run_hops
from bench.plot import plot
from bench.points import Options
from bench.report import (
    RESULTS_DIR,
    backends_table,
    cache_table,
    table,
    targets_text,
    write_results,
)
from bench.run import SCENARIOS, run_benchmark
from bench.soak import run_soak, soak_table
from bench.stack import progress
from bench.telemetry import chosen_variants, run_telemetry, telemetry_table


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _ratios(text: str) -> list[float]:
    try:
        ratios = [float(part) for part in text.split(",") if part]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a list of ratios: {text!r}") from error
    if not ratios or any(not 0 < ratio < 1 for ratio in ratios):
        raise argparse.ArgumentTypeError("sampling ratios are between 0 and 1, e.g. 0.01,0.1")
    return ratios


def _names_any(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _names(text: str) -> list[str]:
    names = [part for part in text.split(",") if part]
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenarios {sorted(unknown)}; known {SCENARIOS}")
    return names


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "mode",
        nargs="?",
        choices=("run", "soak", "edge", "telemetry", "backends", "cache", "hops"),
        default="run",
    )
    parser.add_argument("--users", type=int, default=2000, help="users registered (2000)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per point (20)")
    parser.add_argument("--warmup", type=float, help="seconds before each point (5; soak 30)")
    parser.add_argument("--concurrency", type=_ints, help="1,8,32,64 (soak: one value, 32)")
    parser.add_argument("--scenarios", type=_names, default=list(SCENARIOS), help="of run")
    parser.add_argument("--rounds", type=int, default=2, help="of telemetry, backends (2)")
    parser.add_argument(
        "--backends", type=_ints, default=[1, 2, 3], help="of backends: test LLMs (1,2,3)"
    )
    parser.add_argument(
        "--sampled-ratios",
        type=_ratios,
        default=[0.01],
        help="of telemetry: trace sampling ratios measured beside every request (0.01)",
    )
    parser.add_argument(
        "--variants",
        type=_names_any,
        default=None,
        help="of telemetry: the variants measured, off always among them (all)",
    )
    parser.add_argument(
        "--at-once",
        action="store_true",
        help="of telemetry: load every variant's stack at the same time in each round",
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the soak (5)")
    parser.add_argument("--chats", type=int, default=300, help="of hops: chats traced (300)")
    parser.add_argument("--log-level", default="info", help="LOG_LEVEL of the services (info)")
    parser.add_argument(
        "--label", default=None, help="results name: <label>.json/.png (latest / soak-latest)"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--gateway-replicas", type=int, default=2, help="gateway processes (2: one per core)"
    )
    parser.add_argument(
        "--replicas",
        type=parse_replicas,
        default={},
        metavar="SERVICE=N,...",
        help="processes per service, e.g. auth=2,usage=2,ai=2 (gateway: --gateway-replicas)",
    )
    parser.add_argument("--data-dir", type=Path, help="keep the stack's data and logs here")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> Options:
    soak = args.mode == "soak"
    default = {"soak": [32], "telemetry": [1, 32], "backends": [1, 32], "cache": [1, 32]}.get(
        args.mode, [1, 8, 32, 64]
    )
    concurrency = args.concurrency or default
    if soak and len(concurrency) != 1:
        raise SystemExit("soak runs at one concurrency")
    return Options(
        users=args.users,
        duration_s=args.duration,
        warmup_s=args.warmup if args.warmup is not None else (30.0 if soak else 5.0),
        concurrency=concurrency,
        scenarios=args.scenarios,
        log_level=args.log_level,
        data_dir=args.data_dir,
        gateway_replicas=args.replicas.get("gateway", args.gateway_replicas),
        replicas=args.replicas,
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    options = options_from(args)
    if args.variants is not None:
        try:
            chosen_variants(args.sampled_ratios, args.variants)
        except ValueError as error:
            raise SystemExit(str(error)) from error
    if args.mode == "soak":
        results = run_soak(options, minutes=args.minutes)
        text = soak_table(results)
        label = args.label or "soak-latest"
    elif args.mode == "telemetry":
        results = run_telemetry(
            options,
            rounds=args.rounds,
            sampled_ratios=args.sampled_ratios,
            wanted=args.variants,
            at_once=args.at_once,
        )
        text = telemetry_table(results)
        label = args.label or "telemetry-latest"
    elif args.mode == "backends":
        results = run_backends(options, counts=args.backends, rounds=args.rounds)
        text = backends_table(results)
        label = args.label or "backends-latest"
    elif args.mode == "cache":
        results = run_cache(options)
        text = cache_table(results)
        label = args.label or "cache-latest"
    elif args.mode == "hops":
        results = run_hops(options, chats=args.chats)
        text = hops_table(results)
        label = args.label or "hops-latest"
    elif args.mode == "edge":
        results = run_edge(options)
        text = edge_table(results)
        label = args.label or "edge-latest"
    else:
        results = run_benchmark(options)
        text = f"{table(results)}\n\n{targets_text(results)}"
        label = args.label or "latest"
    paths = write_results(results, directory=args.results_dir, label=label)
    if args.mode == "run":
        paths.append(plot(results, args.results_dir / f"{label}.png"))
    print(text)
    progress("wrote " + ", ".join(str(path) for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
