"""`python -m bench telemetry`: what metrics and tracing cost, against both off, in one run.

Four variants of the same stack, each started afresh with the same users and priming: `off`
(METRICS_ENABLED=false on every service, no tracing), `metrics` (the default: Prometheus metrics
recorded, /metrics scraped every 5 s as Prometheus would), `tracing` (metrics, plus every
request traced and exported over OTLP/HTTP to a local receiver that accepts and counts) and
`sampled_<ratio>` for each of `--sampled-ratios` (default 0.01: one request in a hundred traced,
Kong's default sampling rate; OTEL_TRACES_SAMPLER parentbased_traceidratio,
OTEL_TRACES_SAMPLER_ARG <ratio>). Each variant measures the test LLM directly at c=1 (the floor),
then chats at every concurrency (default 1 and 32); the variants run in turn, `--rounds` times
(default 2), each round starting one variant later than the last, so neither a slow spell of the
machine nor a place in the order falls on one variant. The summary compares the medians over
rounds: chat throughput at the highest concurrency (each variant / off), the CPU per chat there,
and the added p50 at c=1 (chat minus the LLM directly), in milliseconds over off.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
import urllib.request
from collections.abc import Sequence
from typing import Any, Self

from bench.points import Options, Prepared, measure, results_header
from bench.run import prepared_stack
from bench.stack import progress
from tests.otlp_receiver import OtlpReceiver

BASE_VARIANTS = ("off", "metrics", "tracing")
SAMPLED_RATIOS = (0.01,)  # one request in a hundred: Kong's default tracing_sampling_rate
SAMPLED_PREFIX = "sampled_"


def variants(ratios: Sequence[float]) -> list[str]:
    return [*BASE_VARIANTS, *(f"{SAMPLED_PREFIX}{ratio:g}" for ratio in ratios)]


def round_order(names: Sequence[str], round_number: int) -> list[str]:
    """The variants of one round (0-based), each round starting one variant later."""
    shift = round_number % len(names)
    return [*names[shift:], *names[:shift]]


SCRAPE_INTERVAL_S = 5.0


class Scraper:
    """GET /metrics of every process every few seconds, as Prometheus would."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_INTERVAL_S):
            for url in self.urls:
                with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback
                    answer.read()
                self.scrapes += 1

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def variant_env(variant: str, endpoint: str) -> dict[str, str]:
    """The variant's environment for every service; `endpoint`: the OTLP receiver's URL."""
    if variant == "off":
        return {"METRICS_ENABLED": "false"}
    if variant == "metrics":
        return {}
    if variant == "tracing":
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        }
    if not variant.startswith(SAMPLED_PREFIX):
        raise ValueError(f"unknown variant {variant!r}")
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": variant.removeprefix(SAMPLED_PREFIX),
    }


def metrics_urls(prepared: Prepared) -> list[str]:
    stack = prepared.bench.stack
    names = [f"gateway-{i}" if i else "gateway" for i in range(len(stack.gateway_ports))]
    return [f"{stack.service_url(name)}/metrics" for name in (*names, "auth", "usage", "ai")]


def measure_variant(options: Options, variant: str, receiver: OtlpReceiver) -> dict[str, Any]:
    variant_options = dataclasses.replace(
        options, extra_env=variant_env(variant, receiver.url), scenarios=["direct", "chat"]
    )
    progress(f"variant {variant}")
    exports_before = receiver.exports
    with prepared_stack(variant_options) as prepared:
        scraping = Scraper(metrics_urls(prepared) if variant != "off" else [])
        with scraping:
            runs = [
                measure(prepared, prepared.targets["chat"], concurrency=c, options=options)
                for c in options.concurrency
            ]
            floor = measure(prepared, prepared.targets["direct"], concurrency=1, options=options)
    chat_c1 = next((run for run in runs if run["concurrency"] == 1), None)
    return {
        "variant": variant,
        "runs": [*runs, floor],
        "added_p50_ms_c1": round(chat_c1["p50_ms"] - floor["p50_ms"], 3) if chat_c1 else None,
        "scrapes": scraping.scrapes,
        "otlp_exports": receiver.exports - exports_before,
    }


def run_telemetry(
    options: Options, *, rounds: int, sampled_ratios: Sequence[float] = SAMPLED_RATIOS
) -> dict[str, Any]:
    started = time.time()
    names = variants(sampled_ratios)
    measured: list[dict[str, Any]] = []
    # Accepts and counts the exports only: a collector's work is not what is measured, and
    # decoding here would take CPU from the stack on the same cores.
    with OtlpReceiver(keep_spans=False) as receiver:
        for round_number in range(rounds):
            for variant in round_order(names, round_number):
                result = measure_variant(options, variant, receiver)
                measured.append({"round": round_number + 1, **result})
    return {
        **results_header("telemetry", options, started=started, rounds=rounds),
        "measured": measured,
        "sampled_ratios": list(sampled_ratios),
        "summary": summary(measured, names, top=max(options.concurrency)),
    }


def summary(measured: list[dict[str, Any]], names: Sequence[str], *, top: int) -> dict[str, Any]:
    """Medians over rounds per variant, and each variant against off."""
    per_variant: dict[str, dict[str, float]] = {}
    for variant in names:
        mine = [entry for entry in measured if entry["variant"] == variant]
        chats = [run for entry in mine for run in entry["runs"] if _chat_at(run, top)]
        rps = [run["rps"] for run in chats]
        added = [entry["added_p50_ms_c1"] for entry in mine if entry["added_p50_ms_c1"] is not None]
        cpu = [_stack_cpu_ms(run) for run in chats]
        relative = [_services_over_untouched(run) for run in chats]
        per_variant[variant] = {
            f"services_over_untouched_c{top}": round(statistics.median(relative), 3)
            if relative
            else 0.0,
            f"chat_rps_c{top}": round(statistics.median(rps), 1) if rps else 0.0,
            "added_p50_ms_c1": round(statistics.median(added), 3) if added else 0.0,
            f"cpu_ms_per_chat_c{top}": round(statistics.median(cpu), 3) if cpu else 0.0,
        }
    off = per_variant["off"]
    for variant in names[1:]:
        figures = per_variant[variant]
        if off[f"chat_rps_c{top}"]:
            ratio = figures[f"chat_rps_c{top}"] / off[f"chat_rps_c{top}"]
            figures[f"throughput_vs_off_c{top}"] = round(ratio, 3)
        if off[f"services_over_untouched_c{top}"]:
            services = (
                figures[f"services_over_untouched_c{top}"] / off[f"services_over_untouched_c{top}"]
            )
            figures[f"services_cpu_vs_off_c{top}"] = round(services, 3)
        if off[f"cpu_ms_per_chat_c{top}"]:
            cpu_ratio = figures[f"cpu_ms_per_chat_c{top}"] / off[f"cpu_ms_per_chat_c{top}"]
            figures[f"cpu_vs_off_c{top}"] = round(cpu_ratio, 3)
        figures["added_p50_ms_over_off_c1"] = round(
            figures["added_p50_ms_c1"] - off["added_p50_ms_c1"], 3
        )
    return per_variant


# Processes that neither metrics nor tracing touch (no instrumentation, the same work per chat).
UNTOUCHED = ("mongo", "redis", "nginx", "llm")


def _services_over_untouched(run: dict[str, Any]) -> float:
    """The CPU per chat of InferGate's Python services over that of the untouched processes.
    This machine speeds up and slows down by up to a third between points (every process at
    once, the untouched ones too), which the plain CPU per chat carries along; this ratio
    cancels it, leaving what the variant changed in the services."""
    cpu = run["cpu_ms_per_request"]
    untouched = sum(float(cpu.get(name, 0.0)) for name in UNTOUCHED)
    services = sum(float(ms) for name, ms in cpu.items() if name not in (*UNTOUCHED, "wrk"))
    return services / untouched if untouched else 0.0


def _stack_cpu_ms(run: dict[str, Any]) -> float:
    """CPU ms per chat over the stack's processes (not wrk, not the test LLM)."""
    return float(
        sum(ms for name, ms in run["cpu_ms_per_request"].items() if name not in ("wrk", "llm"))
    )


def _chat_at(run: dict[str, Any], concurrency: int) -> bool:
    return bool(run["scenario"] == "chat" and run["concurrency"] == concurrency)


def telemetry_table(results: dict[str, Any]) -> str:
    top = max(results["options"]["concurrency"])
    lines = [
        f"{'variant':16} {f'chat/s c={top}':>12} {'vs off':>7} {f'CPU ms/chat c={top}':>17}"
        f" {'vs off':>7} {'services/untouched':>18} {'vs off':>7} {'added p50 c=1':>14}"
        f" {'vs off':>9}"
    ]
    for variant, figures in results["summary"].items():
        ratio = figures.get(f"throughput_vs_off_c{top}")
        cpu_ratio = figures.get(f"cpu_vs_off_c{top}")
        over = figures.get("added_p50_ms_over_off_c1")
        services = figures.get(f"services_cpu_vs_off_c{top}")
        lines.append(
            f"{variant:16} {figures[f'chat_rps_c{top}']:12.1f}"
            f" {'' if ratio is None else f'{ratio:.3f}':>7}"
            f" {figures[f'cpu_ms_per_chat_c{top}']:17.2f}"
            f" {'' if cpu_ratio is None else f'{cpu_ratio:.3f}':>7}"
            f" {figures.get(f'services_over_untouched_c{top}', 0.0):18.3f}"
            f" {'' if services is None else f'{services:.3f}':>7}"
            f" {figures['added_p50_ms_c1']:11.2f} ms"
            f" {'' if over is None else f'{over:+.2f} ms':>9}"
        )
    return "\n".join(lines)
