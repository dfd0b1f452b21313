"""`python -m infergate_devstack run` and `stop`, as a user runs them (through `make run`)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from infergate_devstack import install
from infergate_devstack.cli import main, observability_wanted
from infergate_devstack.ports import Ports, env_var
from infergate_devstack.processes import pid_alive


def _wait_for_line(path: Path, text: str, *, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while text not in path.read_text():
        assert process.poll() is None, path.read_text()
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.1)


def test_run_prints_the_summary_and_stop_ends_it(tmp_path: Path, ollama_banner: str) -> None:
    """`run` starts Prometheus too (observability is on unless switched off)."""
    ports = Ports.free()
    env = {**os.environ, "OLLAMA_URL": ollama_banner}
    env.update({env_var(name): str(ports.of(name)) for name in Ports.names()})
    cli = [sys.executable, "-m", "infergate_devstack", "--data-dir", str(tmp_path / "data")]
    output = tmp_path / "run.out"
    with output.open("wb") as out:
        run = subprocess.Popen([*cli, "run"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_line(output, "InferGate is running", process=run)
        public = f"http://127.0.0.1:{ports.nginx}"
        prometheus = f"http://127.0.0.1:{ports.prometheus}"
        assert f"curl -s -X POST {public}/v1/register" in output.read_text()
        assert "Prometheus:" in output.read_text()
        assert f"{prometheus} (alerts: {prometheus}/alerts)" in output.read_text()
        assert httpx.get(f"{public}/healthz").status_code == 200
        assert httpx.get(f"{prometheus}/-/ready").status_code == 200
        pid_files = (tmp_path / "data" / "pids").glob("*.json")
        pids = [int(json.loads(path.read_text())["pid"]) for path in pid_files]
        # redis, mongo, auth, usage, ai, two gateways (the default), nginx, prometheus
        assert len(pids) == 9
        assert "api-gateway 2/2:" in output.read_text()

        stopped = subprocess.run([*cli, "stop"], env=env, capture_output=True, text=True)

        assert stopped.returncode == 0, stopped.stderr
        assert run.wait(timeout=30) == 0
    finally:
        run.kill()
    assert "devstack: stopped" in output.read_text()
    assert [pid for pid in pids if pid_alive(pid)] == []


@pytest.mark.parametrize(
    ("flag", "variable", "wanted"),
    [
        (False, None, True),
        (True, None, False),
        (False, "0", False),
        (False, "off", False),
        (False, "1", True),
        (True, "1", False),
    ],
)
def test_observability_is_on_unless_the_flag_or_the_variable_turns_it_off(
    flag: bool, variable: str | None, wanted: bool
) -> None:
    environ = {} if variable is None else {"INFERGATE_OBSERVABILITY": variable}

    assert observability_wanted(disabled_by_flag=flag, environ=environ) is wanted


def test_install_adds_chromium_only_with_browser(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make test` runs `install --llm --browser`; `make install` installs no browser."""
    installed: list[str] = []
    monkeypatch.setattr(install, "ensure_all", lambda progress: installed.append("stack"))
    monkeypatch.setattr(install, "ensure_browser", lambda progress: installed.append("chromium"))

    assert main(["install"]) == 0
    assert main(["install", "--browser"]) == 0

    assert installed == ["stack", "stack", "chromium"]
