"""The peer's points: LiteLLM's proxy (bench/litellm_proxy.py) started from its own venv,
checked with one completion, measured at every concurrency like InferGate, and stopped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.litellm_proxy import MASTER_KEY, PEER_WORKERS, LiteLLMProxy
from bench.litellm_venv import EXCLUDE_NEWER, REQUIREMENT
from bench.points import Options, Prepared, measure
from bench.procs import RssSampler
from bench.stack import check_openai_chat, progress
from bench.wrk import Target


@dataclass(frozen=True)
class Peer:
    runs: list[dict[str, Any]]
    peak_rss_mb: dict[str, float]


def measure_peer(prepared: Prepared, name: str, *, python: Path, options: Options) -> Peer:
    """LiteLLM's proxy (`python`: its venv's) started with its workers, checked, measured at
    every concurrency with its processes under its own name, and stopped (on errors and
    interrupts too)."""
    workers = PEER_WORKERS[name]
    progress(f"starting LiteLLM's proxy with {workers} worker(s)")
    directory = prepared.data_dir / name
    with LiteLLMProxy(
        python, llm_url=prepared.bench.llm.url, directory=directory, workers=workers
    ) as proxy:
        progress(f"{name}: {proxy.url} pid={proxy.pid} (log: {proxy.log_path})")
        check_openai_chat(proxy.url, MASTER_KEY)
        key_file = directory / "master-key.txt"
        key_file.write_text(MASTER_KEY + "\n")
        url = f"{proxy.url}/v1/chat/completions"
        target = Target(name, url, "POST", prepared.files["openai"], key_file, "authorization")
        with RssSampler({name: proxy.pid}) as sampler:
            runs = [
                measure(
                    prepared, target, concurrency=c, options=options, extra_pids={name: proxy.pid}
                )
                for c in options.concurrency
            ]
        return Peer(runs, sampler.peak_mb())


def peer_record(peers: list[str]) -> dict[str, Any]:
    """What the results say about the peer: the exact package, its date pin, the workers."""
    if not peers:
        return {}
    return {
        "requirement": REQUIREMENT,
        "exclude_newer": EXCLUDE_NEWER,
        "workers": {name: PEER_WORKERS[name] for name in peers},
    }
