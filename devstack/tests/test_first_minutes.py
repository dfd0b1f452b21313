"""What a new user meets first: an invalid setting ends `make run` with one line that names the
variable and the rule (no traceback, no earlier run's log lines), and every run starts its logs
afresh while the previous run's are kept."""

from pathlib import Path

import pytest
from infergate_devstack.config import StackConfig
from infergate_devstack.ports import Ports
from infergate_devstack.processes import StartupError
from infergate_devstack.stack import Stack


def _config(data_dir: Path, **env: str) -> StackConfig:
    return StackConfig(
        data_dir=data_dir, ports=Ports.free(), ollama_url="http://127.0.0.1:1", env=env
    )


def test_an_invalid_setting_is_one_clear_line_without_a_traceback(tmp_path: Path) -> None:
    old_log = tmp_path / "logs" / "gateway.log"
    old_log.parent.mkdir(parents=True)
    old_log.write_text("a line of an earlier run\n" * 10)
    stack = Stack(_config(tmp_path, ADMIN_TOKEN="too-short"), only={"gateway"})

    with pytest.raises(StartupError) as raised:
        stack.up()

    message = str(raised.value)
    assert "exited with code 2 during startup" in message
    assert (
        "api-gateway: invalid setting: ADMIN_TOKEN must be empty (admin API off) or at least "
        "16 characters"
    ) in message
    assert "Traceback" not in message
    assert "earlier run" not in message


def test_each_run_writes_fresh_logs_and_keeps_the_previous_runs(tmp_path: Path) -> None:
    with Stack(_config(tmp_path), only={"redis"}) as first:
        first_log = first.log_path("redis").read_text()
    (tmp_path / "logs" / "marker.log").write_text("from the first run\n")

    with Stack(_config(tmp_path), only={"redis"}) as second:
        second_log = second.log_path("redis").read_text()

    previous = tmp_path / "logs.previous"
    assert (previous / "marker.log").read_text() == "from the first run\n"
    assert (previous / "redis.log").read_text().startswith(first_log)
    assert not (tmp_path / "logs" / "marker.log").exists()
    assert first_log
    assert first_log not in second_log
