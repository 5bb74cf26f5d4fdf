"""The local Prefect server `riskctl run` starts: a real server process, at lower CPU priority."""

from __future__ import annotations

import os
import socket
import subprocess

import httpx
import pytest

from flows import server

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((server.DEFAULT_HOST, 0))
        return s.getsockname()[1]


def test_the_server_starts_healthy_below_the_cycles_priority_off_its_cpu_with_batched_recording_and_stops(
        tmp_path, monkeypatch):
    # Arrange
    monkeypatch.setenv("RISK_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("RISK_SERVER_NICE", raising=False)
    monkeypatch.setenv("RISK_MONITOR_CPUS", "1")
    ours = os.sched_getaffinity(0)
    port = _free_port()
    # Act
    url, started = server.start(port=port, wait_s=180)
    try:
        pid = int((tmp_path / "prefect-server.pid").read_text())
        nice = os.getpriority(os.PRIO_PROCESS, pid)
        group_nice = server.autogroup_nice(pid)
        cpus = os.sched_getaffinity(pid)
        healthy = server.is_healthy(url)
        settings = httpx.get(f"{url}/admin/settings", timeout=10).json()
    finally:
        stopped = server.stop()
    # Assert
    assert started and healthy
    assert nice == min(19, os.getpriority(os.PRIO_PROCESS, 0) + server.DEFAULT_NICE)
    # where sessions are scheduled as groups, the server's own session group is lowered too,
    # below ours, or below nice 0 where we run in no session group (as under init)
    if group_nice is not None:
        assert group_nice == min(19, (server.autogroup_nice() or 0) + server.DEFAULT_NICE)
    # the monitor keeps the highest CPU (risklib.cpu_placement), the server gets the others
    assert cpus == (set(sorted(ours)[:-1]) if len(ours) > 1 else ours)
    assert stopped and not server.is_healthy(url)
    recorder = settings["server"]["services"]["task_run_recorder"]
    assert (recorder["batch_size"], recorder["flush_interval"]) == (200, 1.0)  # task runs recorded in batches


@pytest.mark.parametrize(("raw", "expected"), [("", server.DEFAULT_NICE), ("0", 0), ("19", 19)])
def test_server_priority_comes_from_the_environment(monkeypatch, raw, expected):
    # Arrange
    monkeypatch.setenv("RISK_SERVER_NICE", raw)
    # Act / Assert
    assert server.server_nice() == expected


@pytest.mark.parametrize("raw", ["high", "-5", "20"])
def test_a_bad_server_priority_names_the_setting_and_value(monkeypatch, raw):
    # Arrange
    monkeypatch.setenv("RISK_SERVER_NICE", raw)
    # Act / Assert
    with pytest.raises(ValueError, match=rf"RISK_SERVER_NICE='{raw}'"):
        server.server_nice()


def test_a_temporary_server_prefect_starts_itself_records_task_runs_in_batches_too(monkeypatch):
    # Arrange: nothing set by the operator; the settings go to this process's environment
    from prefect.server.api.server import SubprocessASGIServer

    for name in server.SERVER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    server.apply_to_temporary_server()
    temporary = SubprocessASGIServer(port=_free_port())  # what `--ephemeral` runs
    # Act
    temporary.start(timeout=180)
    try:
        settings = httpx.get(f"{temporary.api_url}/admin/settings", timeout=10).json()
    finally:
        temporary.stop()
    # Assert
    assert settings["server"]["services"]["task_run_recorder"]["batch_size"] == 200
    assert settings["server"]["analytics_enabled"] is False


def test_an_operators_own_server_setting_wins(monkeypatch):
    # Arrange
    for name in server.SERVER_SETTINGS:
        monkeypatch.delenv(name, raising=False)  # restored at teardown, whatever the call sets
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE", "7")
    # Act
    server.apply_to_temporary_server()
    # Assert
    assert os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"] == "7"


@pytest.fixture
def child():
    """A real process to renice."""
    proc = subprocess.Popen(["sleep", "30"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.mark.parametrize(("ours", "expected"), [("/autogroup-7 nice 3\n", "13"), ("", "10")])
def test_the_servers_session_group_is_lowered_below_ours_or_below_nice_0_outside_any_group(tmp_path, child, ours, expected):
    # Arrange: a /proc where this process's group is given
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "autogroup").write_text(ours)  # empty: the root group, as under init
    (tmp_path / str(child)).mkdir()
    (tmp_path / str(child) / "autogroup").write_text("/autogroup-9 nice 0\n")
    # Act
    server.lower_priority(child, 10, proc=tmp_path)
    # Assert
    assert (tmp_path / str(child) / "autogroup").read_text() == expected
    assert os.getpriority(os.PRIO_PROCESS, child) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)


def test_without_session_groups_only_the_process_is_lowered(tmp_path, child):
    # Arrange: a kernel without autogroups has no such files
    # Act
    server.lower_priority(child, 5, proc=tmp_path)
    # Assert
    assert not (tmp_path / str(child)).exists()
    assert os.getpriority(os.PRIO_PROCESS, child) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
