"""make run's supervisor: an exited or unresponsive component is restarted with its cause logged,
after the servers it needs answer; one that keeps dying stops the stack, named. Real processes,
short backoffs."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from devstack.services import CommandService
from devstack.supervisor import ComponentKeepsDying, Supervisor

pytestmark = pytest.mark.make_test


def _service(tmp_path: Path, name: str, code: str, ready=lambda: True) -> CommandService:
    return CommandService(name, [sys.executable, "-c", code], tmp_path / name, tmp_path / "logs", [],
                          env=dict(os.environ), ready=ready, start_timeout=10)


def _supervisor(lines: list[str], **kwargs) -> Supervisor:
    options = {"backoff_s": (0.05,), "max_restarts": 3, "window_s": 60, "probe_every_s": 0.05,
               "unresponsive_s": 0.3} | kwargs
    return Supervisor(lines.append, **options)


def _tick_until(supervisor: Supervisor, predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervisor.tick()
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.fixture
def started():
    services = []
    yield services
    for service in services:
        service.stop()
        service.kill_group()


def test_a_killed_component_is_restarted_and_the_cause_logged(tmp_path, started):
    service = _service(tmp_path, "worker", "import time; print('serving', flush=True); time.sleep(300)")
    service.start()
    started.append(service)
    lines: list[str] = []
    supervisor = _supervisor(lines)
    supervisor.add(service)
    first_pid = service.proc.pid
    deadline = time.monotonic() + 10
    while "serving" not in service.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)

    os.kill(first_pid, signal.SIGKILL)
    _tick_until(supervisor, lambda: service.running() and service.proc.pid != first_pid)

    assert lines[0].startswith("worker was killed by SIGKILL (last log line: serving); restarting it in 0.05s"), lines
    assert lines[-1].startswith("worker restarted and answering"), lines
    assert supervisor.restarts("worker") == 1


def test_a_component_that_keeps_dying_stops_the_stack_naming_it_and_the_cause(tmp_path, started):
    service = _service(tmp_path, "crashy", "print('FATAL: bad config', flush=True); raise SystemExit(3)")
    service.start()
    started.append(service)
    supervisor = _supervisor([], max_restarts=2)
    supervisor.add(service)

    with pytest.raises(ComponentKeepsDying) as raised:
        _tick_until(supervisor, lambda: False)

    message = str(raised.value)
    assert message.startswith("crashy keeps dying: 3 times within 1 min"), message
    assert "exited with code 3 (last log line: FATAL: bad config)" in message
    assert str(service.log_path) in message


def test_backoff_grows_with_each_exit_in_the_window(tmp_path, started):
    service = _service(tmp_path, "flaky", "raise SystemExit(1)")
    service.start()
    started.append(service)
    lines: list[str] = []
    supervisor = _supervisor(lines, backoff_s=(0.05, 0.1, 0.2), max_restarts=5)
    supervisor.add(service)

    _tick_until(supervisor, lambda: supervisor.restarts("flaky") >= 4)

    delays = [line.split("restarting it in ")[1].split("s ")[0] for line in lines if "restarting it in" in line]
    assert delays[:4] == ["0.05", "0.1", "0.2", "0.2"], lines


def test_a_component_waits_for_the_servers_it_needs_before_it_is_restarted(tmp_path, started):
    database_up = tmp_path / "database-up"
    database_up.touch()
    database = _service(tmp_path, "database", "import time; time.sleep(300)", ready=database_up.exists)
    scheduler = _service(tmp_path, "scheduler", "import time; time.sleep(300)")
    for service in (database, scheduler):
        service.start()
        started.append(service)
    lines: list[str] = []
    supervisor = _supervisor(lines)
    supervisor.add(database)
    supervisor.add(scheduler, needs=[database])

    database_up.unlink()  # e.g. Postgres in crash recovery: running, refusing connections
    os.kill(scheduler.proc.pid, signal.SIGKILL)
    for _ in range(10):
        supervisor.tick()
        time.sleep(0.05)
    assert not scheduler.running()
    assert "scheduler: waiting for database to answer before restarting it" in lines

    database_up.touch()
    _tick_until(supervisor, scheduler.running)
    assert lines[-1].startswith("scheduler restarted"), lines


def test_a_server_that_stops_answering_is_restarted(tmp_path, started):
    answering = tmp_path / "answering"
    answering.touch()
    service = _service(tmp_path, "s3", "import time; time.sleep(300)", ready=answering.exists)
    service.start()
    started.append(service)
    lines: list[str] = []
    supervisor = _supervisor(lines)
    supervisor.add(service, liveness=True)
    first_pid = service.proc.pid

    answering.unlink()
    _tick_until(supervisor, lambda: any("did not answer its health check" in line for line in lines))
    answering.touch()
    _tick_until(supervisor, lambda: service.running() and service.proc.pid != first_pid)

    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)  # the hung process was killed, not left beside its replacement


def test_a_brief_pause_is_not_a_restart(tmp_path, started):
    answering = tmp_path / "answering"
    answering.touch()
    service = _service(tmp_path, "redis", "import time; time.sleep(300)", ready=answering.exists)
    service.start()
    started.append(service)
    lines: list[str] = []
    supervisor = _supervisor(lines, unresponsive_s=5)
    supervisor.add(service, liveness=True)
    first_pid = service.proc.pid

    answering.unlink()
    for _ in range(6):
        supervisor.tick()
        time.sleep(0.05)
    answering.touch()
    _tick_until(supervisor, lambda: any("answers again" in line for line in lines))

    assert service.proc.pid == first_pid
    assert supervisor.restarts("redis") == 0


def test_the_children_of_a_dead_leader_are_killed_before_the_restart(tmp_path, started):
    child_pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys, time, pathlib; "
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
            f"pathlib.Path({str(child_pid_file)!r}).write_text(str(child.pid)); time.sleep(300)")
    service = _service(tmp_path, "scheduler", code)
    service.start()
    started.append(service)
    supervisor = _supervisor([])
    supervisor.add(service)
    deadline = time.monotonic() + 10
    while not child_pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(child_pid_file.read_text())

    os.kill(service.proc.pid, signal.SIGKILL)  # e.g. a scheduler whose task processes live on
    _tick_until(supervisor, lambda: supervisor.restarts("scheduler") == 1)

    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)
