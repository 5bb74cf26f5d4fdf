"""The local Prefect server that `riskctl run` and `riskctl serve` start when no API is configured.

The server keeps its SQLite database under the project's data directory and is
left running after a session so operators can browse the runs; `riskctl server
stop` stops it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from risklib.cpu_placement import current_plan

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
#: CPU priority (``nice``) of the local server. Ingesting a task run's events costs the server
#: ~30 ms of CPU, so at the continuous cadence it wants most of a core; at equal priority it
#: takes that from the risk cycle on a small machine. Its work can wait (the events queue and
#: the UI catches up); the cycle's cannot. ``RISK_SERVER_NICE`` overrides; 0 for equal priority.
DEFAULT_NICE = 10
#: Server settings the local server starts with (an operator's own environment wins). The task
#: run recorder writes each task-run state change in its own transaction by default: ~28 ms of
#: server CPU per task run here, more than a 100-account cycle's own work. Recording up to 200
#: in one transaction, at least once a second, costs ~9 ms; the UI shows a task run's state at
#: most a second later. Every state is still recorded.
SERVER_SETTINGS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}


def apply_to_temporary_server() -> None:
    """Give a temporary server Prefect starts on its own (``riskctl run --ephemeral``) the settings of
    :data:`SERVER_SETTINGS`: it inherits this process's environment (what is set there already wins)."""
    for name, value in SERVER_SETTINGS.items():
        os.environ.setdefault(name, value)


def data_dir() -> Path:
    """Where the server's database, log and pid file live (``RISK_DATA_DIR`` or ``.riskpipe/``)."""
    return Path(os.environ.get("RISK_DATA_DIR", Path.cwd() / ".riskpipe")).resolve()


def api_url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    return f"http://{host}:{port}/api"


def ui_url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    return f"http://{host}:{port}"


def is_healthy(url: str, timeout_s: float = 1.0) -> bool:
    try:
        return httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def _pid_file() -> Path:
    return data_dir() / "prefect-server.pid"


def server_nice() -> int:
    """The local server's ``nice`` increment (``RISK_SERVER_NICE``, else :data:`DEFAULT_NICE`)."""
    raw = os.environ.get("RISK_SERVER_NICE", "").strip()
    if not raw:
        return DEFAULT_NICE
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"RISK_SERVER_NICE={raw!r}: expected an integer from 0 to 19") from None
    if not 0 <= value <= 19:
        raise ValueError(f"RISK_SERVER_NICE={raw!r}: expected an integer from 0 to 19")
    return value


PROC = Path("/proc")


def autogroup_nice(pid: int | str = "self", proc: Path = PROC) -> int | None:
    """The ``nice`` of a process's autogroup (its session's scheduling group).

    None without autogroups, and for a process in the root group (its file is empty there).
    """
    try:
        return int((proc / str(pid) / "autogroup").read_text().split("nice")[1])
    except (OSError, IndexError, ValueError):
        return None


def lower_priority(pid: int, nice: int, proc: Path = PROC) -> None:
    """Run process ``pid`` ``nice`` steps below this one: the process itself and its session's group.

    The server starts in a session of its own (it outlives the command that started it).
    Where the kernel groups processes by session for scheduling (autogroup, on by
    default on many Linux systems) the groups share the CPU equally whatever their
    processes' nice, so the process's nice alone would leave the server level with the
    pipeline: its group's nice is lowered too.
    """
    os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))
    if autogroup_nice(pid, proc) is None:  # no autogroups here: the process's nice is all there is
        return
    # a process outside any session group (e.g. started by init) competes thread by thread at nice 0
    ours = autogroup_nice("self", proc) or 0
    try:
        (proc / str(pid) / "autogroup").write_text(str(min(19, ours + nice)))
    except OSError:  # not permitted here: the process's own nice still applies within its group
        pass


def start(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, wait_s: float = 90.0,
          nice: int | None = None) -> tuple[str, bool]:
    """Start a local Prefect server in the background unless one answers already.

    The server runs at lower CPU priority (``nice``, default :func:`server_nice`),
    so the risk cycle comes first when both want the CPU, and on the CPUs the monitor
    leaves it (:func:`risklib.cpu_placement.current_plan`: call this before the monitor
    is placed, or the server would share the monitor's CPU).

    Returns ``(api_url, started)``. Raises ``RuntimeError`` with the log's tail
    if the server does not become healthy within ``wait_s``.
    """
    nice = server_nice() if nice is None else nice
    url = api_url(host, port)
    if is_healthy(url):
        return url, False
    placement = current_plan()
    home = data_dir() / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    log = data_dir() / "prefect-server.log"
    env = {**SERVER_SETTINGS, **os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # survives the command that started it
        )
    if nice:
        # set before the server has started anything (importing takes seconds): what it starts inherits it
        lower_priority(proc.pid, nice)
    if placement is not None:
        with contextlib.suppress(OSError):  # not permitted here: the server shares the CPUs
            os.sched_setaffinity(proc.pid, placement.server)
    _pid_file().write_text(str(proc.pid))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if is_healthy(url):
            return url, True
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"Prefect server at {url} did not start within {wait_s:.0f}s; log {log}:\n{tail}")


def stop() -> bool:
    """Stop the server this project started; False if none was recorded or it was gone."""
    pid_file = _pid_file()
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().strip() or 0)
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    return True
