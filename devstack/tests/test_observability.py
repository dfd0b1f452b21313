"""Prometheus in the local stack: started only when asked, scraping every service process (each
gateway replica), with the repository's rules. Runs nothing but promtool."""

import subprocess
from pathlib import Path
from typing import Any

import yaml
from infergate_devstack.config import StackConfig
from infergate_devstack.install import require_program
from infergate_devstack.plan import StackPlan
from infergate_devstack.ports import Ports


def _plan(data_dir: Path, *, observability: bool, replicas: int = 1) -> StackPlan:
    config = StackConfig(
        data_dir=data_dir,
        ports=Ports.free(),
        gateway_replicas=replicas,
        observability=observability,
    )
    return StackPlan(config, only=None)


def _generated_config(plan: StackPlan) -> dict[str, Any]:
    spec = plan.prometheus_spec()
    config_file = next(arg for arg in spec.argv if arg.startswith("--config.file="))
    loaded: dict[str, Any] = yaml.safe_load(Path(config_file.split("=", 1)[1]).read_text())
    return loaded


def test_prometheus_runs_only_when_observability_is_asked_for(tmp_path: Path) -> None:
    quiet = _plan(tmp_path / "quiet", observability=False)
    observed = _plan(tmp_path / "observed", observability=True)

    assert "prometheus" not in quiet.components
    assert "prometheus" not in dict(quiet.ports_needed())
    assert "prometheus" in observed.components
    assert dict(observed.ports_needed())["prometheus"] == observed.config.ports.prometheus


def test_prometheus_scrapes_every_service_process_as_a_job_per_service(tmp_path: Path) -> None:
    plan = _plan(tmp_path, observability=True, replicas=2)

    config = _generated_config(plan)

    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    ports = plan.config.ports
    assert jobs == {
        "prometheus": [f"127.0.0.1:{ports.prometheus}"],
        "auth-service": [f"127.0.0.1:{ports.auth}"],
        "usage-service": [f"127.0.0.1:{ports.usage}"],
        "ai-service": [f"127.0.0.1:{ports.ai}"],
        "api-gateway": [f"127.0.0.1:{port}" for port in plan.gateway_ports],
    }
    assert len(plan.gateway_ports) == 2
    assert config["global"]["scrape_interval"] == "5s"
    assert config["rule_files"] == [
        str(plan.config.repo_root / "observability/prometheus/rules.yml")
    ]


def test_prometheus_listens_on_loopback_and_keeps_its_data_in_the_data_dir(tmp_path: Path) -> None:
    plan = _plan(tmp_path, observability=True)

    argv = plan.prometheus_spec().argv

    assert f"--web.listen-address=127.0.0.1:{plan.config.ports.prometheus}" in argv
    assert f"--storage.tsdb.path={plan.data_dir / 'prometheus' / 'data'}" in argv


def test_the_generated_configuration_passes_promtool(tmp_path: Path) -> None:
    spec = _plan(tmp_path, observability=True, replicas=2).prometheus_spec()
    config_file = next(arg for arg in spec.argv if arg.startswith("--config.file="))

    checked = subprocess.run(
        [str(require_program("promtool")), "check", "config", config_file.split("=", 1)[1]],
        capture_output=True,
        text=True,
        check=False,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
