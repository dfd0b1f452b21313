import time
from collections.abc import Callable
from pathlib import Path

import pytest
from infergate_devstack.processes import (
    ManagedProcess,
    ProcessSpec,
    StartupError,
    cmdline_contains,
    group_members,
    kill_leftovers,
    pid_alive,
)


def _process(tmp_path: Path, script: str, *, ready_timeout_s: float = 5.0) -> ManagedProcess:
    spec = ProcessSpec(
        name="probe",
        argv=["sh", "-c", script],
        env={"PATH": "/usr/bin:/bin"},
        log_path=tmp_path / "logs" / "probe.log",
        ready=lambda: False,
        ready_timeout_s=ready_timeout_s,
    )
    return ManagedProcess(spec, pid_dir=tmp_path / "pids")


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "condition not met within 5 s"
        time.sleep(0.02)


def test_a_process_that_exits_during_startup_fails_fast_with_its_log(tmp_path: Path) -> None:
    process = _process(tmp_path, "echo 'config error: bad port'; exit 3", ready_timeout_s=30)
    process.spawn()
    started = time.monotonic()

    with pytest.raises(StartupError) as error:
        process.wait_ready()

    assert time.monotonic() - started < 5
    assert "exited with code 3" in str(error.value)
    assert "config error: bad port" in str(error.value)


def test_a_process_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    process = _process(tmp_path, "exec sleep 30", ready_timeout_s=0.3)
    process.spawn()
    try:
        with pytest.raises(StartupError, match="not ready after"):
            process.wait_ready()
    finally:
        process.stop()


def test_stop_kills_the_whole_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    process = _process(tmp_path, "trap '' TERM; sleep 30 & sleep 30 & wait")
    process.spawn()
    pgid = process.pid
    assert pgid is not None
    _wait_for(lambda: len(group_members(pgid)) == 3)

    started = time.monotonic()
    process.stop(timeout_s=0.5)

    assert time.monotonic() - started < 5
    assert group_members(pgid) == []
    assert not (tmp_path / "pids" / "probe.json").exists()


def test_leftovers_of_a_vanished_stack_are_stopped(tmp_path: Path) -> None:
    process = _process(tmp_path, "sleep 30; true")
    process.spawn()
    pid = process.pid
    assert pid is not None
    _wait_for(lambda: cmdline_contains(pid, "sh"))  # exec'd, as a leftover long after start is

    assert kill_leftovers(tmp_path / "pids") == ["probe"]

    assert not pid_alive(pid)
    assert list((tmp_path / "pids").iterdir()) == []
    process.stop()
