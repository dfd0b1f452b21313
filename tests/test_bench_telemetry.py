"""The benchmark's telemetry comparison, its pure parts: the variants and their environments,
the order of each round, and the summary against off."""

from __future__ import annotations

from typing import Any

import pytest

from bench.telemetry import chosen_variants, round_order, summary, variant_env, variants

RECEIVER = "http://127.0.0.1:4318"


def test_each_sampling_ratio_is_a_variant_after_the_three_fixed_ones() -> None:
    assert variants([0.01, 0.1]) == ["off", "metrics", "tracing", "sampled_0.01", "sampled_0.1"]


def test_a_sampled_variant_traces_with_a_parent_based_ratio_sampler() -> None:
    env = variant_env("sampled_0.01", RECEIVER)
    assert env == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": RECEIVER,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
    }
    assert variant_env("off", RECEIVER) == {"METRICS_ENABLED": "false"}
    assert variant_env("tracing", RECEIVER)["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"
    with pytest.raises(ValueError, match="unknown variant"):
        variant_env("tracing_sometimes", RECEIVER)


def test_every_variant_takes_every_place_in_the_order_over_as_many_rounds() -> None:
    names = variants([0.01, 0.1])
    orders = [round_order(names, r) for r in range(len(names))]
    assert orders[0] == names
    for order in orders:
        assert sorted(order) == sorted(names)
    for place in range(len(names)):
        assert sorted(order[place] for order in orders) == sorted(names)


def _entry(
    variant: str, rps: float, cpu_ms: float, added: float, untouched_ms: float = 4.0
) -> dict[str, Any]:
    cpu = {"gateway": cpu_ms, "wrk": 5.0, "llm": untouched_ms / 4, "mongo": untouched_ms * 3 / 4}
    chat = {"scenario": "chat", "concurrency": 32, "rps": rps, "cpu_ms_per_request": cpu}
    return {"variant": variant, "runs": [chat], "added_p50_ms_c1": added}


def test_the_summary_takes_medians_over_rounds_and_compares_each_variant_with_off() -> None:
    names = variants([0.01])
    measured = [
        _entry("off", 200.0, 8.0, 10.0),
        _entry("off", 100.0, 9.0, 12.0),
        _entry("off", 210.0, 10.0, 11.0),
        *(_entry(name, 190.0, 9.0, 11.5) for name in names[1:] for _ in range(3)),
    ]
    figures = summary(measured, names, top=32)
    assert figures["off"]["chat_rps_c32"] == 200.0
    # wrk and the test LLM left out: the gateway and SecantusDB (3 ms)
    assert figures["off"]["cpu_ms_per_chat_c32"] == 12.0
    assert figures["sampled_0.01"]["throughput_vs_off_c32"] == 0.95
    assert figures["sampled_0.01"]["cpu_vs_off_c32"] == 1.0
    assert figures["off"]["services_over_untouched_c32"] == 2.25  # 9 ms over 4 ms
    assert figures["sampled_0.01"]["added_p50_ms_over_off_c1"] == 0.5


def test_the_services_cpu_is_compared_over_the_untouched_processes_cpu() -> None:
    """A point where the whole machine ran 25 % slower (every process, the untouched ones too)
    is not counted against its variant."""
    names = variants([0.01])
    measured = [
        _entry("off", 200.0, 8.0, 10.0, untouched_ms=4.0),
        *(_entry(name, 160.0, 10.0, 11.0, untouched_ms=5.0) for name in names[1:]),
    ]
    figures = summary(measured, names, top=32)
    assert figures["metrics"]["cpu_vs_off_c32"] == 1.25
    assert figures["metrics"]["services_cpu_vs_off_c32"] == 1.0


def _round(round_number: int, variant: str, rps: float, added: float) -> dict[str, Any]:
    return {"round": round_number, **_entry(variant, rps, 8.0, added)}


def test_the_paired_figures_compare_each_round_with_off_in_the_same_round() -> None:
    """Rounds at different speeds of the whole machine compare alike; a round without off
    (cut short) is left out."""
    measured = [
        _round(1, "off", 200.0, 10.0),
        _round(1, "sampled_0.01", 190.0, 10.2),
        _round(2, "off", 100.0, 20.0),
        _round(2, "sampled_0.01", 95.0, 20.2),
        _round(3, "sampled_0.01", 98.0, 19.0),
        _round(3, "off", 98.0, 19.0),
        _round(4, "sampled_0.01", 10.0, 90.0),
    ]
    figures = summary(measured, ["off", "sampled_0.01"], top=32)["sampled_0.01"]
    assert figures["throughput_vs_off_c32_paired"] == 0.95
    assert figures["added_p50_ms_over_off_c1_paired"] == 0.2
    assert figures["services_cpu_vs_off_c32_paired"] == 1.0


def test_chosen_variants_keep_off_and_the_usual_order_and_refuse_unknown_names() -> None:
    assert chosen_variants([0.01], None) == variants([0.01])
    assert chosen_variants([0.01], ["sampled_0.01", "metrics"]) == [
        "off",
        "metrics",
        "sampled_0.01",
    ]
    with pytest.raises(ValueError, match="unknown variants"):
        chosen_variants([0.01], ["sampled_0.1"])
