"""The benchmark's backends and cache scenarios, their pure parts: the environment for N test
LLMs, their CPU summed as one, the round order, the spread check, the ratios against one
backend and of a hit over a miss, and the never-repeated request bodies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.backends import check_spread, round_orders, summary, versus_one
from bench.cache import summary as cache_summary
from bench.figures import fold_llm_cpu
from bench.points import check_answers
from bench.stack import backends_env, cached_body, llm_name, never_repeated_body
from bench.wrk import Target, WrkResult, parse_output, wrk_argv


def test_the_stack_env_names_every_backend_in_ollama_urls() -> None:
    urls = ["http://127.0.0.1:1001", "http://127.0.0.1:1002", "http://127.0.0.1:1003"]
    assert backends_env(urls) == {"OLLAMA_URLS": ",".join(urls)}
    assert backends_env(urls[:1]) == {"OLLAMA_URLS": urls[0]}
    with pytest.raises(ValueError, match="at least one"):
        backends_env([])


def test_test_llms_are_named_llm_then_numbered() -> None:
    assert [llm_name(i) for i in range(3)] == ["llm", "llm-2", "llm-3"]


def test_every_test_llms_cpu_is_summed_as_llm() -> None:
    cpu = {"gateway": 40.0, "llm": 3.1, "llm-2": 2.5, "ai": 20.0, "llm-3": 1.2, "machine": 90.0}
    folded = fold_llm_cpu(cpu)
    assert folded == {"gateway": 40.0, "llm": 6.8, "ai": 20.0, "machine": 90.0}


def test_rounds_alternate_the_order_of_the_counts() -> None:
    assert round_orders([1, 2, 3], 3) == [[1, 2, 3], [3, 2, 1], [1, 2, 3]]


def chat_point(
    concurrency: int, *, rps: float, p50: float, p99: float, calls: list[int], **cpu: float
) -> dict[str, Any]:
    return {
        "scenario": "chat",
        "concurrency": concurrency,
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "cpu_ms_per_request": cpu,
        "llm_backends": [
            {"name": llm_name(i), "chat_calls": n, "cpu_percent": 1.0} for i, n in enumerate(calls)
        ],
    }


def direct_point(*, p50: float, p99: float) -> dict[str, Any]:
    return {"scenario": "direct", "concurrency": 1, "rps": 5000.0, "p50_ms": p50, "p99_ms": p99}


def test_a_backend_without_calls_stops_the_benchmark() -> None:
    runs = [chat_point(1, rps=50, p50=10, p99=20, calls=[40, 0])]
    with pytest.raises(RuntimeError, match="none reached"):
        check_spread(2, runs)
    spread = [chat_point(1, rps=50, p50=10, p99=20, calls=[30, 20]), direct_point(p50=1, p99=2)]
    assert check_spread(2, spread) == {"llm": 30, "llm-2": 20}


def entry(backends: int, *, rps32: float, cpu32: float, p50_c1: float) -> dict[str, Any]:
    calls = [10] * backends
    return {
        "backends": backends,
        "runs": [
            chat_point(1, rps=50, p50=p50_c1, p99=p50_c1 * 2, calls=calls, ai=1.0, wrk=0.1),
            chat_point(32, rps=rps32, p50=100, p99=200, calls=calls, ai=cpu32, llm=0.2, wrk=0.1),
            direct_point(p50=0.5, p99=1.0),
        ],
    }


def test_each_count_is_compared_with_one_backend_by_medians_over_rounds() -> None:
    measured = [
        entry(1, rps32=200, cpu32=8.0, p50_c1=15.5),
        entry(2, rps32=180, cpu32=9.0, p50_c1=16.5),
        entry(1, rps32=220, cpu32=10.0, p50_c1=16.5),
        entry(2, rps32=200, cpu32=11.0, p50_c1=17.5),
    ]
    result = summary(measured, concurrency=[1, 32])
    one, two = result["1"], result["2"]
    assert one["points"]["32"]["rps"] == 210.0
    # The stack's own CPU: the test LLMs and wrk are not the stack's.
    assert one["points"]["32"]["stack_cpu_ms"] == 9.0
    assert one["points"]["32"]["cpu_ms_per_chat"]["llm"] == 0.2
    assert one["added_p50_ms_c1"] == 15.5
    assert two["versus_base"]["rps_ratio_c32"] == round(190 / 210, 3)
    assert two["versus_base"]["cpu_ratio_c32"] == round(10.0 / 9.0, 3)
    assert two["versus_base"]["added_p50_ms_c1_over_base"] == 1.0
    assert one["versus_base"]["rps_ratio_c32"] == 1.0


def test_a_count_with_no_throughput_has_no_ratio() -> None:
    figures = {
        "points": {"32": {"rps": 0.0, "stack_cpu_ms": 0.0}},
        "added_p50_ms_c1": 0.0,
        "added_p99_ms_c1": 0.0,
    }
    compared = versus_one({1: figures, 2: figures})
    assert compared[2]["rps_ratio_c32"] is None


def cache_point(name: str, concurrency: int, *, rps: float, p50: float, cpu: float) -> Any:
    return {
        "scenario": name,
        "concurrency": concurrency,
        "rps": rps,
        "requests": 100,
        "llm_calls": 0 if name == "cache-hit" else 100,
        "p50_ms": p50,
        "p99_ms": p50 * 2,
        "cpu_ms_per_request": {"gateway": cpu, "llm": 0.3, "wrk": 0.1},
    }


def test_a_hit_is_compared_with_a_miss_at_each_concurrency() -> None:
    runs = [
        cache_point("cache-hit", 32, rps=300, p50=100, cpu=5.0),
        cache_point("cache-miss", 32, rps=150, p50=200, cpu=10.0),
        cache_point("openai", 32, rps=140, p50=210, cpu=10.5),
        cache_point("cache-hit", 1, rps=100, p50=10, cpu=10.0),
        cache_point("cache-miss", 1, rps=60, p50=16, cpu=20.0),
        {**direct_point(p50=0.2, p99=1.0), "cpu_ms_per_request": {}},
    ]
    result = cache_summary(runs)
    assert result["32"]["hit_over_miss"] == {
        "rps": 2.0,
        "p50_ms": 0.5,
        "p99_ms": 0.5,
        "stack_cpu_ms": 0.5,
    }
    assert result["32"]["cache-hit"]["llm_calls_per_request"] == 0.0
    assert result["1"]["cache-hit"]["over_direct_p50_ms"] == 9.8
    assert "openai" not in result["1"]
    assert "over_direct_p50_ms" not in result["32"]["openai"]


def test_the_never_repeated_body_is_the_cached_one_with_a_numbered_seed() -> None:
    text = never_repeated_body()
    assert json.loads(text.replace("__N__", "17")) == {**cached_body(), "seed": 17}
    assert cached_body()["temperature"] == 0


def test_only_a_unique_target_gives_wrk_a_base_number() -> None:
    body, keys = Path("body.json"), Path("keys.txt")
    repeated = Target("cache-hit", "http://x/v1/chat/completions", "POST", body, keys)
    unique = Target("cache-miss", repeated.url, "POST", body, keys, unique=True)
    plain = wrk_argv(repeated, concurrency=32, seconds=5)
    numbered = wrk_argv(unique, concurrency=32, seconds=5)
    assert numbered[: len(plain)] == plain
    assert len(numbered) == len(plain) + 1
    assert int(numbered[-1]) < 2**53  # exact in LuaJIT's numbers


def wrk_line(statuses: str, cache: str) -> str:
    return (
        'BENCH_RESULT {"duration_us":1000000,"requests":10,"bytes":1,'
        '"errors":{"connect":0,"read":0,"write":0,"timeout":0,"status":0},'
        '"latency_us":{"p50":1000,"p95":2000,"p99":3000,"max":4000,"mean":1500.0},'
        f'"statuses":{{{statuses}}},"cache":{{{cache}}}}}'
    )


def test_wrk_counts_answers_by_their_cache_header() -> None:
    result = parse_output(wrk_line('"200":10', '"hit":9,"miss":1'))
    assert result.cache == {"hit": 9, "miss": 1}


def answers(cache: str) -> WrkResult:
    return parse_output(wrk_line('"200":10', cache))


def test_a_hit_point_stops_when_a_request_missed_or_reached_the_llm() -> None:
    check_answers("cache-hit", concurrency=1, result=answers('"hit":10'), llm_calls=0)
    with pytest.raises(RuntimeError, match="x-infergate-cache"):
        check_answers("cache-hit", concurrency=1, result=answers('"hit":9,"miss":1'), llm_calls=0)
    with pytest.raises(RuntimeError, match="during cache hits"):
        check_answers("cache-hit", concurrency=1, result=answers('"hit":10'), llm_calls=1)


def test_a_miss_point_stops_when_an_answer_did_not_reach_the_llm() -> None:
    check_answers("cache-miss", concurrency=32, result=answers('"miss":10'), llm_calls=10)
    with pytest.raises(RuntimeError, match="the LLM saw 9"):
        check_answers("cache-miss", concurrency=32, result=answers('"miss":10'), llm_calls=9)
