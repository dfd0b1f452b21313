"""`python -m bench telemetry`: what metrics and tracing cost, against both off, in one run.

Four variants of the same stack, each started afresh with the same users and priming: `off`
(METRICS_ENABLED=false on every service, no tracing), `metrics` (the default: Prometheus metrics
recorded, /metrics scraped every 5 s as Prometheus would), `tracing` (metrics, plus every
request traced and exported over OTLP/HTTP to a local receiver that accepts and counts) and
`sampled_<ratio>` for each of `--sampled-ratios` (default 0.01: one request in a hundred traced,
Kong's default sampling rate; OTEL_TRACES_SAMPLER parentbased_traceidratio,
OTEL_TRACES_SAMPLER_ARG <ratio>); `--variants` picks some of them (off always).

Every variant's stack is started first (each with its own ports, data, test LLM and users, all
primed), and they stay up for the whole run: the rounds then take turns on the running stacks,
so the variants measured against each other in one round are minutes apart, not a restart and a
priming apart, and as many rounds as wanted cost no more restarts. The stacks not being measured
sit idle (their background loops, and the scrapes). Each turn measures chats at every
concurrency (default 1 and 32), then the variant's own test LLM directly at c=1 (the floor);
each round starts one variant later than the last, so neither a slow spell of the machine nor a
place in the order falls on one variant. With `--at-once` each round loads every variant's
stack at the same time instead (`measure_at_once`): the machine's swings then fall on every
variant alike, and a costlier variant shows as fewer chats answered beside the others.

The summary gives, per variant, the medians over rounds (chat throughput at the highest
concurrency, the CPU per chat there, the services' CPU over the untouched processes', the added
p50 at c=1: chat minus the LLM directly) and each against off's; and the same comparisons made
round by round (each variant against off in the same round) with their median over rounds, the
`_paired` figures, which a slow spell between rounds does not move.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
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


def variant_options(options: Options, variant: str, endpoint: str) -> Options:
    return dataclasses.replace(
        options, extra_env=variant_env(variant, endpoint), scenarios=["direct", "chat"]
    )


def measure_variant(
    options: Options, variant: str, prepared: Prepared, receiver: OtlpReceiver
) -> dict[str, Any]:
    """One turn of `variant` on its running stack: chats at every concurrency, then the floor."""
    progress(f"variant {variant}")
    exports_before = receiver.exports
    runs = [
        measure(prepared, prepared.targets["chat"], concurrency=c, options=options)
        for c in options.concurrency
    ]
    floor = measure(prepared, prepared.targets["direct"], concurrency=1, options=options)
    # The exporters flush every few seconds: a turn's count may include the last seconds of
    # the turn before (the idle stacks export nothing: their background spans are dropped).
    return {**_entry(variant, runs, floor), "otlp_exports": receiver.exports - exports_before}


def measure_at_once(options: Options, running: dict[str, Prepared]) -> list[dict[str, Any]]:
    """One round with every variant's stack loaded at the same time (each its own wrk, at each
    concurrency in turn, then each its own floor): whatever the machine does during the round
    (this one swings between two speeds a third apart, every process at once) it does to every
    variant alike, and the variants share the cores as equals, so a costlier one answers fewer
    chats. Each variant's figures are its own processes' CPU and its own wrk's counts."""
    progress("variants " + ", ".join(running) + " at once")
    chats: dict[str, list[dict[str, Any]]] = {variant: [] for variant in running}
    for concurrency in options.concurrency:
        points = _simultaneously(
            {
                variant: partial(
                    measure,
                    prepared,
                    prepared.targets["chat"],
                    concurrency=concurrency,
                    options=options,
                )
                for variant, prepared in running.items()
            }
        )
        for variant, run in points.items():
            chats[variant].append(run)
    floors = _simultaneously(
        {
            variant: partial(
                measure, prepared, prepared.targets["direct"], concurrency=1, options=options
            )
            for variant, prepared in running.items()
        }
    )
    return [_entry(variant, chats[variant], floors[variant]) for variant in running]


def _simultaneously(calls: dict[str, Callable[[], dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = {name: pool.submit(call) for name, call in calls.items()}
        return {name: future.result() for name, future in futures.items()}


def _entry(variant: str, runs: list[dict[str, Any]], floor: dict[str, Any]) -> dict[str, Any]:
    chat_c1 = next((run for run in runs if run["concurrency"] == 1), None)
    return {
        "variant": variant,
        "runs": [*runs, floor],
        "added_p50_ms_c1": round(chat_c1["p50_ms"] - floor["p50_ms"], 3) if chat_c1 else None,
    }


def chosen_variants(sampled_ratios: Sequence[float], wanted: Sequence[str] | None) -> list[str]:
    """Every variant, or those of `wanted` (in the usual order), off always among them."""
    names = variants(sampled_ratios)
    if not wanted:
        return names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known {names}")
    return [name for name in names if name == "off" or name in wanted]


def run_telemetry(
    options: Options,
    *,
    rounds: int,
    sampled_ratios: Sequence[float] = SAMPLED_RATIOS,
    wanted: Sequence[str] | None = None,
    at_once: bool = False,
) -> dict[str, Any]:
    started = time.time()
    names = chosen_variants(sampled_ratios, wanted)
    measured: list[dict[str, Any]] = []
    scrapers: list[Scraper] = []
    # Accepts and counts the exports only: a collector's work is not what is measured, and
    # decoding here would take CPU from the stack on the same cores.
    with OtlpReceiver(keep_spans=False) as receiver, ExitStack() as stacks:
        running: dict[str, Prepared] = {}
        for variant in names:
            progress(f"variant {variant}: starting its stack")
            prepared = stacks.enter_context(
                prepared_stack(variant_options(options, variant, receiver.url))
            )
            running[variant] = prepared
            if variant != "off":
                scrapers.append(stacks.enter_context(Scraper(metrics_urls(prepared))))
        for round_number in range(rounds):
            if at_once:
                for result in measure_at_once(options, running):
                    measured.append({"round": round_number + 1, **result})
                continue
            for variant in round_order(names, round_number):
                result = measure_variant(options, variant, running[variant], receiver)
                measured.append({"round": round_number + 1, **result})
        exports = receiver.exports
    return {
        **results_header("telemetry", options, started=started, rounds=rounds, at_once=at_once),
        "measured": measured,
        "variants": names,
        "sampled_ratios": list(sampled_ratios),
        "scrapes": sum(scraper.scrapes for scraper in scrapers),
        "otlp_exports": exports,
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
        figures.update(paired(measured, variant, top=top))
    return per_variant


def paired(measured: list[dict[str, Any]], variant: str, *, top: int) -> dict[str, float]:
    """`variant` against off round by round (each in the same round), the median over rounds:
    throughput and the services' CPU at `top` as ratios, the added p50 at c=1 as a difference."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for entry in measured:
        by_round.setdefault(int(entry.get("round", 0)), {})[entry["variant"]] = entry
    rounds = [
        _against_off(entries[variant], entries["off"], top=top)
        for entries in by_round.values()
        if variant in entries and "off" in entries
    ]
    names = (
        f"throughput_vs_off_c{top}_paired",
        f"services_cpu_vs_off_c{top}_paired",
        "added_p50_ms_over_off_c1_paired",
    )
    figures: dict[str, float] = {}
    for index, name in enumerate(names):
        values = [value for each in rounds if (value := each[index]) is not None]
        if values:
            figures[name] = round(statistics.median(values), 3)
    return figures


def _against_off(
    mine: dict[str, Any], off: dict[str, Any], *, top: int
) -> tuple[float | None, float | None, float | None]:
    """One round: throughput and services' CPU ratios at `top`, added p50 difference at c=1."""
    rps = services = added = None
    mine_chat, off_chat = _chat_run(mine, top), _chat_run(off, top)
    if mine_chat is not None and off_chat is not None:
        if off_chat["rps"]:
            rps = mine_chat["rps"] / off_chat["rps"]
        if _services_over_untouched(off_chat):
            services = _services_over_untouched(mine_chat) / _services_over_untouched(off_chat)
    if mine["added_p50_ms_c1"] is not None and off["added_p50_ms_c1"] is not None:
        added = mine["added_p50_ms_c1"] - off["added_p50_ms_c1"]
    return rps, services, added


def _chat_run(entry: dict[str, Any], concurrency: int) -> dict[str, Any] | None:
    return next((run for run in entry["runs"] if _chat_at(run, concurrency)), None)


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
    lines += ["", "against off in the same round, median over rounds:"]
    for variant, figures in list(results["summary"].items())[1:]:
        ratio = figures.get(f"throughput_vs_off_c{top}_paired")
        services = figures.get(f"services_cpu_vs_off_c{top}_paired")
        over = figures.get("added_p50_ms_over_off_c1_paired")
        lines.append(
            f"{variant:16} chat/s c={top} {'-' if ratio is None else f'{ratio:.3f}'}"
            f"  services' CPU {'-' if services is None else f'{services:.3f}'}"
            f"  added p50 c=1 {'-' if over is None else f'{over:+.2f} ms'}"
        )
    return "\n".join(lines)
