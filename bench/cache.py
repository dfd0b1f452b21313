"""`python -m bench cache`: what a response-cache hit costs against a miss.

One stack with the gateway's response cache on (CACHE_TTL_SECONDS=3600, CACHE_HIT_CHARGE left
at its default, `none`: a hit is free and only logged). Every user is primed with the same
deterministic `POST /v1/chat/completions` body (`temperature` 0) through each gateway, which
also leaves each user's answer in the cache; one request then has to come back
`x-infergate-cache: hit`. At each concurrency (default 1 and 32), in turn:

- `cache-hit`: that body again, every user's own answer kept: each request is a hit, answered
  without ai-service or the LLM (the LLM's call counter must not move during the run);
- `cache-miss`: the same body with a `seed` no other request has (load.lua numbers them): each
  request is a miss, goes the whole way to the LLM, and its answer is stored;
- `openai`: the usual OpenAI body (no temperature, so never cached): the path without the
  cache, to show what a miss adds (a lookup, and a store in the background);

then the test LLM directly at c=1 (the floor). Every answer of `cache-hit` and `cache-miss`
must carry the expected header (wrk counts them). CACHE_MAX_ENTRIES is raised far above what a
run stores so that the stored misses never evict the hits (evictions are not measured).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import httpx

from bench.backends import stack_cpu_ms
from bench.points import Options, Prepared, measure, results_header
from bench.run import CACHE_SCENARIOS, prepared_stack
from bench.stack import cached_body, progress

CACHE_ENV = {"CACHE_TTL_SECONDS": "3600", "CACHE_MAX_ENTRIES": "10000000"}
POINT_SCENARIOS = (*CACHE_SCENARIOS, "openai")


def check_hits(prepared: Prepared, keys: list[str]) -> None:
    """After priming, the first, middle and last users' deterministic chat come from the cache."""
    for key in (keys[0], keys[len(keys) // 2], keys[-1]):
        response = httpx.post(
            prepared.targets["cache-hit"].url,
            json=cached_body(),
            headers={"authorization": f"Bearer {key}"},
            timeout=30.0,
        )
        cached = response.headers.get("x-infergate-cache")
        if response.status_code != 200 or cached != "hit":
            raise RuntimeError(f"cache check: {response.status_code}, x-infergate-cache {cached}")
    progress("cache check: primed users' chats are hits")


def run_cache(options: Options) -> dict[str, Any]:
    started = time.time()
    cached = dataclasses.replace(
        options,
        scenarios=["direct", *POINT_SCENARIOS],
        extra_env={**CACHE_ENV, **options.extra_env},
    )
    with prepared_stack(cached) as prepared:
        check_hits(prepared, prepared.files["keys"].read_text().split())
        runs = [
            measure(prepared, prepared.targets[name], concurrency=c, options=cached)
            for c in options.concurrency
            for name in POINT_SCENARIOS
        ]
        runs.append(measure(prepared, prepared.targets["direct"], concurrency=1, options=cached))
        peak = prepared.sampler.peak_mb()
    return {
        **results_header("cache", options, started=started, env={**CACHE_ENV, **options.extra_env}),
        "runs": runs,
        "summary": summary(runs),
        "peak_rss_mb": peak,
    }


def _ratio(value: float, base: float) -> float | None:
    return round(value / base, 3) if base else None


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per concurrency: each scenario's chats/s, p50, p99 and CPU ms per request (the stack's,
    not the LLM's or wrk's), and a hit over a miss as ratios; at c=1 the latency over the LLM
    called directly."""
    by_key = {(run["scenario"], run["concurrency"]): run for run in runs}
    direct = by_key.get(("direct", 1))
    per_concurrency: dict[str, Any] = {}
    for concurrency in sorted({c for name, c in by_key if name != "direct"}):
        row: dict[str, Any] = {}
        for name in POINT_SCENARIOS:
            run = by_key.get((name, concurrency))
            if run is None:
                continue
            row[name] = {
                "rps": run["rps"],
                "p50_ms": run["p50_ms"],
                "p99_ms": run["p99_ms"],
                "stack_cpu_ms": stack_cpu_ms(run),
                "llm_calls_per_request": _ratio(run["llm_calls"], run["requests"]),
            }
            if concurrency == 1 and direct is not None:
                row[name]["over_direct_p50_ms"] = round(run["p50_ms"] - direct["p50_ms"], 3)
                row[name]["over_direct_p99_ms"] = round(run["p99_ms"] - direct["p99_ms"], 3)
        hit, miss = row.get("cache-hit"), row.get("cache-miss")
        if hit is not None and miss is not None:
            row["hit_over_miss"] = {
                key: _ratio(hit[key], miss[key])
                for key in ("rps", "p50_ms", "p99_ms", "stack_cpu_ms")
            }
        per_concurrency[str(concurrency)] = row
    return per_concurrency
