"""Dashboards and alerts against the real Prometheus of a local stack (two gateway replicas, the
deterministic test LLM): every process is scraped, and after a short load every PromQL expression
of the Grafana dashboard and of the rules returns data. Plus promtool on the rules and both
configurations, and the dashboard JSON checked for what Grafana's provisioning needs.

The expressions are read from the files Grafana and Prometheus load (the dashboard JSON and
rules.yml): there is no second copy to drift.

The load goes to each gateway replica directly (not through nginx, which may send every request
to one replica) and twice, with a scrape in between: a rate needs a series to be seen before it
grows, and series such as time to first token are born with the first stream.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from infergate_devstack.config import StackConfig
from infergate_devstack.install import require_program
from infergate_devstack.nginx import UNLIMITED_EDGE
from infergate_devstack.ports import Ports
from infergate_devstack.stack import Stack

from tests.fake_ollama_fixtures import FakeOllamaControl, FakeOllamaProcess
from tests.helpers import chat, provisioned, register

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "observability" / "prometheus"
GRAFANA_DIR = ROOT / "observability" / "grafana"
RULES: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())
DASHBOARD: dict[str, Any] = json.loads((GRAFANA_DIR / "dashboards" / "infergate.json").read_text())
DATASOURCES: dict[str, Any] = yaml.safe_load(
    (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
)
# An alert is `<measurement> <comparison> <threshold>` (see rules.yml).
ALERT_SHAPE = re.compile(
    r"^(?P<measurement>.+)\s(?P<op>==|!=|>=|<=|>|<)\s*(?P<threshold>-?[\d.]+)$"
)
RATE_LIMIT = 6  # the user limiter's allowance per window in this stack
DEADLINE_S = 30.0

ENV = {
    **UNLIMITED_EDGE,
    "FREE_RATE_LIMIT": str(RATE_LIMIT),
    "RATE_LIMIT_WINDOW": "60",
    "REGISTRATION_RATE_LIMIT": "10000",
    "AUTH_FAILURE_RATE_LIMIT": "100000",
    "MAX_OUTPUT_TOKENS": "100",
    "PROMPT_TOKEN_OVERHEAD": "16",
    "OLLAMA_TIMEOUT": "2",
    "LOG_LEVEL": "warning",
}


@dataclass(frozen=True)
class Query:
    """A PromQL expression to evaluate, and where it comes from (the test id)."""

    source: str
    expr: str


def rules() -> list[dict[str, Any]]:
    return [rule for group in RULES["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def measured(alert: dict[str, Any]) -> str:
    """The alert's condition as 0/1 for every series it measures: data even while it is quiet."""
    shape = ALERT_SHAPE.match(" ".join(alert["expr"].split()))
    assert shape is not None, f"{alert['alert']}: not `<measurement> <op> <threshold>`"
    return f"{shape['measurement']} {shape['op']} bool {shape['threshold']}"


def panels() -> list[dict[str, Any]]:
    return list(DASHBOARD["panels"])


def dashboard_queries() -> list[Query]:
    return [
        Query(f"panel {panel['title']} {target['refId']}", target["expr"])
        for panel in panels()
        for target in panel["targets"]
    ]


def rule_queries() -> list[Query]:
    recorded = [
        Query(f"record {rule['record']}", rule["expr"]) for rule in rules() if "record" in rule
    ]
    return recorded + [Query(f"alert {rule['alert']}", measured(rule)) for rule in alerts()]


# Every expression that must return data after the load.
QUERIES = dashboard_queries() + rule_queries()


def provisioned_uid() -> str:
    (datasource,) = DATASOURCES["datasources"]
    uid: str = datasource["uid"]
    return uid


# -- the stack, its load, and Prometheus's HTTP API -------------------------------------------


@pytest.fixture(scope="module")
def observed(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllamaProcess
) -> Iterator[Stack]:
    config = StackConfig(
        data_dir=provisioned(tmp_path_factory.mktemp("observed")),
        ports=Ports.free(),
        ollama_url=fake_ollama.url,
        env=ENV,
        gateway_replicas=2,
        observability=True,
    )
    with Stack(config) as stack:
        yield stack


@pytest.fixture(scope="module")
async def loaded(observed: Stack, fake_ollama: FakeOllamaProcess) -> Stack:
    """The stack after two rounds of load on every replica, each round scraped (the first makes
    the series that are born with an event, the second makes them grow)."""
    async with httpx.AsyncClient(timeout=10.0) as control_client:
        llm = FakeOllamaControl(fake_ollama.url, control_client)
        await llm.configure(prompt_tokens=7, completion_tokens=5)
        try:
            for _ in range(2):
                for port in observed.gateway_ports:
                    await load_round(f"http://127.0.0.1:{port}", llm)
                # The wait blocks: it runs in a thread, off the event loop.
                await asyncio.to_thread(wait_for_scrapes_after, observed, time.time())
        finally:
            await llm.reset()
    return observed


async def load_round(gateway: str, llm: FakeOllamaControl) -> None:
    """Chats plain and streamed, a bad key, a rate-limited user, and a failing model call."""
    async with httpx.AsyncClient(base_url=gateway, timeout=30.0) as client:
        key = await register(client)
        for _ in range(2):
            assert (await chat(client, key)).status_code == 200
            streamed = await client.post(
                "/v1/chat", json={"prompt": "Hi", "stream": True}, headers={"x-api-key": key}
            )
            assert '"done"' in streamed.text, streamed.text
        assert (await chat(client, "ig_not-a-key")).status_code == 401
        limited = await register(client)
        statuses = [
            (await client.get("/test", headers={"x-api-key": limited})).status_code
            for _ in range(RATE_LIMIT + 1)
        ]
        assert statuses[-1] == 429, statuses
        await llm.configure(fail_status=500)
        try:
            assert (await chat(client, key)).status_code >= 500
        finally:
            await llm.configure(fail_status=None)


def prometheus_get(stack: Stack, path: str, **params: str) -> Any:
    response = httpx.get(f"{stack.prometheus_url}{path}", params=params, timeout=10.0)
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "success", body
    return body["data"]


def scraped_at(target: dict[str, Any]) -> float:
    return datetime.fromisoformat(target["lastScrape"]).timestamp()


def wait_for_scrapes_after(stack: Stack, moment: float) -> None:
    """Until every target answered a scrape that started after `moment` (epoch seconds)."""

    def scraped() -> bool:
        targets = prometheus_get(stack, "/api/v1/targets", state="active")["activeTargets"]
        return bool(targets) and all(
            t["health"] == "up" and scraped_at(t) > moment for t in targets
        )

    poll(scraped, what=f"a scrape of every target after {moment}")


def poll(condition: Callable[[], bool], *, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def finite_values(result: dict[str, Any]) -> list[float]:
    if result["resultType"] == "scalar":
        samples = [result["result"][1]]
    else:
        samples = [series["value"][1] for series in result["result"]]
    return [value for value in map(float, samples) if math.isfinite(value)]


# -- the running Prometheus ------------------------------------------------------------------


def test_prometheus_scrapes_every_process_of_the_stack(loaded: Stack) -> None:
    targets = prometheus_get(loaded, "/api/v1/targets", state="active")["activeTargets"]
    scraped = {(t["labels"]["job"], t["labels"]["instance"]) for t in targets}

    def at(name: str) -> str:
        return loaded.service_url(name).removeprefix("http://")

    assert scraped == {
        ("api-gateway", at("gateway")),
        ("api-gateway", at("gateway-1")),
        ("auth-service", at("auth")),
        ("usage-service", at("usage")),
        ("ai-service", at("ai")),
        ("prometheus", loaded.prometheus_url.removeprefix("http://")),
    }
    assert {t["health"] for t in targets} == {"up"}


def test_prometheus_loaded_every_rule_and_evaluates_it_without_error(loaded: Stack) -> None:
    groups = prometheus_get(loaded, "/api/v1/rules")["groups"]
    loaded_rules = [rule for group in groups for rule in group["rules"]]

    assert sorted(rule["name"] for rule in loaded_rules) == sorted(
        rule.get("alert") or rule["record"] for rule in rules()
    )
    assert [(r["name"], r.get("lastError")) for r in loaded_rules if r["health"] != "ok"] == []


@pytest.mark.parametrize("query", QUERIES, ids=[query.source for query in QUERIES])
def test_the_expression_returns_data_after_load(loaded: Stack, query: Query) -> None:
    found: list[float] = []

    def has_data() -> bool:
        found[:] = finite_values(prometheus_get(loaded, "/api/v1/query", query=query.expr))
        return bool(found)

    poll(has_data, what=f"data from {query.expr}")
    assert found


@pytest.mark.parametrize("alert", alerts(), ids=[alert["alert"] for alert in alerts()])
def test_the_alert_expression_evaluates_without_error(loaded: Stack, alert: dict[str, Any]) -> None:
    result = prometheus_get(loaded, "/api/v1/query", query=alert["expr"])

    assert result["resultType"] == "vector"


# -- promtool ----------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(require_program("promtool")), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False, cwd=PROMETHEUS_DIR)


def test_promtool_checks_the_rules() -> None:
    checked = promtool("check", "rules", "rules.yml")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_promtool_unit_tests_pass_and_show_every_alert_firing_and_quiet() -> None:
    tested = yaml.safe_load((PROMETHEUS_DIR / "rules_test.yml").read_text())
    cases = [case for test in tested["tests"] for case in test.get("alert_rule_test", [])]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}

    checked = promtool("test", "rules", "rules_test.yml")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert firing == quiet == {alert["alert"] for alert in alerts()}


def test_promtool_checks_the_generated_and_the_compose_configurations(observed: Stack) -> None:
    generated = observed.data_dir / "prometheus" / "prometheus.yml"

    for config in (generated, PROMETHEUS_DIR / "prometheus.yml"):
        checked = promtool("check", "config", str(config))
        assert checked.returncode == 0, checked.stdout + checked.stderr


# -- the dashboard as Grafana provisions it ----------------------------------------------------


def test_the_dashboard_has_the_shape_grafana_provisions() -> None:
    ids = [panel["id"] for panel in panels()]

    assert DASHBOARD["uid"]
    assert DASHBOARD["title"]
    assert DASHBOARD["schemaVersion"] >= 39
    assert len(ids) == len(set(ids))
    for panel in panels():
        box = panel["gridPos"]
        assert box["x"] >= 0, panel["title"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        assert box["h"] > 0, panel["title"]


@pytest.mark.parametrize("panel", panels(), ids=[panel["title"] for panel in panels()])
def test_every_panel_queries_the_provisioned_datasource(panel: dict[str, Any]) -> None:
    datasource = {"type": "prometheus", "uid": provisioned_uid()}
    ref_ids = [target["refId"] for target in panel["targets"]]

    assert panel["type"] in {"timeseries", "stat"}
    assert panel["datasource"] == datasource
    assert panel["targets"]
    assert len(ref_ids) == len(set(ref_ids))
    for target in panel["targets"]:
        assert target["datasource"] == datasource
        assert target["expr"].strip()
        assert Query(f"panel {panel['title']} {target['refId']}", target["expr"]) in QUERIES


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    """Every topic has a panel, directly or through a recording rule of rules.yml."""
    recorded = {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}
    exprs = " ".join(target["expr"] for panel in panels() for target in panel["targets"])
    used = re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", exprs)
    expanded = exprs + " ".join(recorded[name] for name in used)

    assert set(used) <= set(recorded)
    for metric in (
        "infergate_http_requests_total",
        "infergate_gateway_overhead_seconds_bucket",
        "gen_ai_client_token_usage_sum",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "infergate_rate_limit_decisions_total",
        "infergate_quota_reservations_total",
        "infergate_circuit_breaker_state",
        "infergate_internal_call_duration_seconds_bucket",
        "infergate_redis_errors_total",
        "infergate_mongo_errors_total",
        "infergate_usage_group_commit_batch_size_bucket",
        "infergate_usage_sweeper_last_success_timestamp_seconds",
    ):
        assert metric in expanded, metric
    assert 'status_class="5xx"' in expanded
