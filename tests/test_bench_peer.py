"""The benchmark's comparison with LiteLLM's proxy: its config, environment and command, its
pinned venv, stopping every process it made, and the ratios computed from one run's points."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.figures import added_latency, ratios, side_cpu_ms
from bench.litellm_proxy import (
    MASTER_KEY,
    PEER_WORKERS,
    LiteLLMProxy,
    litellm_config,
    proxy_command,
    proxy_env,
)
from bench.litellm_venv import LITELLM_VERSION, REQUIREMENT, litellm_venv_dir
from bench.report import table
from bench.stack import openai_body, write_inputs
from bench.wrk import Target, wrk_argv

LLM_URL = "http://127.0.0.1:11434"


def point(
    scenario: str, concurrency: int, *, rps: float, p50: float, p99: float, **cpu_ms: float
) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "concurrency": concurrency,
        "rps": rps,
        "p50_ms": p50,
        "p95_ms": (p50 + p99) / 2,
        "p99_ms": p99,
        "errors": 0,
        "cpu_percent": {name: ms * rps / 10 for name, ms in cpu_ms.items()},
        "cpu_ms_per_request": cpu_ms,
    }


def side_by_side_runs() -> list[dict[str, Any]]:
    """One run's points: the LLM directly, InferGate's OpenAI route, LiteLLM with 1 and 2
    workers, at c=1 and c=32 (each with the idle other side's processes sampled too)."""
    return [
        point("direct", 1, rps=5000.0, p50=0.2, p99=1.0, llm=0.1, wrk=0.05),
        point("openai", 1, rps=60.0, p50=14.2, p99=21.0, gateway=6.0, mongo=5.0, llm=0.5, wrk=0.1),
        point(
            "litellm", 1, rps=38.0, p50=26.2, p99=37.0, litellm=25.0, mongo=0.4, llm=0.6, wrk=0.1
        ),
        point("litellm-2", 1, rps=37.0, p50=26.8, p99=40.0, **{"litellm-2": 26.0}, llm=0.6),
        point("direct", 32, rps=8000.0, p50=3.0, p99=8.0, llm=0.1),
        point("openai", 32, rps=200.0, p50=150.0, p99=260.0, gateway=4.0, usage=5.0, llm=0.2),
        point("litellm", 32, rps=40.0, p50=600.0, p99=1800.0, litellm=24.0, gateway=0.1),
        point("litellm-2", 32, rps=50.0, p50=500.0, p99=1500.0, **{"litellm-2": 30.0}),
    ]


def test_litellm_config_serves_llama3_from_the_test_llm_through_ollama_chat() -> None:
    config = litellm_config(llm_url=LLM_URL, master_key=MASTER_KEY)

    (model,) = config["model_list"]
    assert model["model_name"] == openai_body()["model"] == "llama3"
    assert model["litellm_params"] == {"model": "ollama_chat/llama3", "api_base": LLM_URL}
    assert config["general_settings"] == {"master_key": MASTER_KEY}
    assert "database_url" not in yaml.safe_dump(config)


def test_proxy_env_reads_the_cost_map_locally_without_database_or_workspace_venv() -> None:
    base = {"PATH": "/bin", "VIRTUAL_ENV": "/w/.venv", "PYTHONPATH": "/w", "DATABASE_URL": "pg://x"}

    env = proxy_env(base)

    assert env == {"PATH": "/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


@pytest.mark.parametrize(("scenario", "workers"), [("litellm", "1"), ("litellm-2", "2")])
def test_proxy_command_starts_the_scenarios_workers_on_loopback(
    scenario: str, workers: str
) -> None:
    argv = proxy_command(
        Path("/v/bin/python"), config=Path("/d/c.yaml"), port=4000, workers=PEER_WORKERS[scenario]
    )

    assert argv[:3] == ["/v/bin/python", "-m", "litellm.proxy.proxy_cli"]
    assert argv[argv.index("--num_workers") + 1] == workers
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--config") + 1] == "/d/c.yaml"
    # A worker importing LiteLLM for longer than uvicorn's 5 s ping is not killed as hung.
    if workers != "1":
        assert int(argv[argv.index("--timeout_worker_healthcheck") + 1]) >= 60


def test_litellm_venv_is_pinned_exactly_and_named_after_the_version(tmp_path: Path) -> None:
    assert f"litellm[proxy]=={LITELLM_VERSION}" == REQUIREMENT
    venv = litellm_venv_dir(cache_dir=tmp_path)
    assert venv.parent == tmp_path
    assert venv.name.startswith(f"litellm-venv-{LITELLM_VERSION}-")


def test_peer_requests_carry_the_master_key_as_a_bearer_token(tmp_path: Path) -> None:
    files = write_inputs(tmp_path, ["key-1"])
    target = Target(
        "litellm",
        "http://127.0.0.1:4000/v1/chat/completions",
        "POST",
        files["openai"],
        files["keys"],
        key_header="authorization",
    )

    argv = wrk_argv(target, concurrency=32, seconds=5)

    assert argv[-5:] == ["POST", str(files["openai"]), str(files["keys"]), "2", "authorization"]
    assert yaml.safe_load(files["openai"].read_text()) == openai_body()


def test_stopping_the_proxy_ends_every_process_of_its_group(tmp_path: Path) -> None:
    # A supervisor whose worker outlives it unless the whole group is signalled, as uvicorn's
    # workers would.
    script = (
        "import subprocess, sys, time;"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal, time;"
        " signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)']);"
        "print(child.pid, flush=True); time.sleep(60)"
    )
    proxy = LiteLLMProxy(Path(sys.executable), llm_url=LLM_URL, directory=tmp_path, workers=1)
    proxy.process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proxy.process.stdout is not None
    worker = int(proxy.process.stdout.readline())
    leader = proxy.pid

    proxy.stop()

    for pid in (leader, worker):
        assert not _alive(pid)


def _alive(pid: int) -> bool:
    for _ in range(50):  # a killed process needs its parent (here: init) to reap it
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z":
            return False
        time.sleep(0.1)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_added_latency_covers_infergate_and_the_peer_over_the_llm_directly() -> None:
    added = {(a["scenario"], a["concurrency"]): a for a in added_latency(side_by_side_runs())}

    assert set(added) == {(s, c) for s in ("openai", "litellm", "litellm-2") for c in (1, 32)}
    assert added[("openai", 1)]["p50_ms"] == pytest.approx(14.0)
    assert added[("litellm", 1)]["p99_ms"] == pytest.approx(36.0)


def test_side_cpu_counts_only_the_processes_of_the_side_that_answered() -> None:
    runs = {(run["scenario"], run["concurrency"]): run for run in side_by_side_runs()}

    assert side_cpu_ms(runs[("openai", 1)]) == pytest.approx(11.0)  # not the LLM, not wrk
    assert side_cpu_ms(runs[("litellm", 1)]) == pytest.approx(25.0)  # not the idle stack


def test_ratios_put_infergates_openai_route_over_litellm_with_one_and_two_workers() -> None:
    result = ratios(side_by_side_runs())

    assert result["infergate_scenario"] == "openai"
    p50, p99 = result["added_latency_c1_ms"]["p50"], result["added_latency_c1_ms"]["p99"]
    assert (p50["infergate"], p50["litellm"], p50["ratio"]) == pytest.approx((14.0, 26.0, 0.538))
    assert (p99["infergate"], p99["litellm"], p99["ratio"]) == pytest.approx((20.0, 36.0, 0.556))
    (c32,) = result["throughput_rps"]
    assert c32["concurrency"] == 32
    assert (c32["ratio_litellm"], c32["ratio_litellm-2"]) == pytest.approx((5.0, 4.0))
    cpu = {row["concurrency"]: row for row in result["cpu_ms_per_request"]}
    assert cpu[32] == pytest.approx(
        {"concurrency": 32, "infergate": 9.0, "litellm": 24.0, "litellm-2": 30.0}
    )


def test_ratios_fall_back_to_the_chat_route_and_need_a_peer() -> None:
    runs = [
        run | {"scenario": "chat"} if run["scenario"] == "openai" else run
        for run in side_by_side_runs()
    ]

    assert ratios(runs)["infergate_scenario"] == "chat"
    assert ratios([run for run in runs if not run["scenario"].startswith("litellm")]) == {}


def test_report_prints_the_ratios_next_to_the_points() -> None:
    runs = side_by_side_runs()
    results = {
        "runs": runs,
        "added_latency_ms": added_latency(runs),
        "ratios": ratios(runs),
        "peak_rss_mb": {"litellm": 390.0},
    }

    text = table(results)

    assert "InferGate (openai) against LiteLLM's proxy" in text
    assert "throughput c=32: InferGate 200.0 req/s, litellm 40.0 (ratio 5.00)" in text
    assert "litellm-2 50.0 (ratio 4.00)" in text
