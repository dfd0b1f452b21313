"""`python -m infergate_devstack run` and `stop`, as a user runs them (through `make run`)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from infergate_devstack.ports import Ports, env_var
from infergate_devstack.processes import pid_alive


def _wait_for_line(path: Path, text: str, *, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while text not in path.read_text():
        assert process.poll() is None, path.read_text()
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.1)


def test_run_prints_the_summary_and_stop_ends_it(tmp_path: Path, ollama_banner: str) -> None:
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
        assert f"curl -s -X POST {public}/v1/register" in output.read_text()
        assert httpx.get(f"{public}/healthz").status_code == 200
        pid_files = (tmp_path / "data" / "pids").glob("*.json")
        pids = [int(json.loads(path.read_text())["pid"]) for path in pid_files]
        assert len(pids) == 7

        stopped = subprocess.run([*cli, "stop"], env=env, capture_output=True, text=True)

        assert stopped.returncode == 0, stopped.stderr
        assert run.wait(timeout=30) == 0
    finally:
        run.kill()
    assert "devstack: stopped" in output.read_text()
    assert [pid for pid in pids if pid_alive(pid)] == []
