"""`riskctl api`: bad input exits 2 naming it; the served app answers over real HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from risklib.cli import app

pytestmark = pytest.mark.integration


def test_missing_config_file_exits_2_naming_it(tmp_path):
    r = CliRunner().invoke(app, ["api", "--config", str(tmp_path / "nope.toml"), "--warehouse", str(tmp_path / "wh")])
    assert r.exit_code == 2 and f"config={str(tmp_path / 'nope.toml')!r}: file not found" in r.output


def test_bad_port_exits_2():
    r = CliRunner().invoke(app, ["api", "--port", "0"])
    assert r.exit_code == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serves_the_control_plane_over_http(tmp_path, wh_template):
    # Arrange: a copy of the two-cycle warehouse, a token in the environment
    shutil.copytree(wh_template, tmp_path / "wh")
    port = _free_port()
    # every credential in the environment, so no Prefect Secret block lookup slows the start
    env = {**os.environ, "RISK_API_TOKEN": "tok-123", "TWILIO_ACCOUNT_SID": "AC0", "TWILIO_AUTH_TOKEN": "t0",
           "SENDGRID_API_KEY": "SG.0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from risklib.cli import main; main()", "api", "--port", str(port),
         "--warehouse", str(tmp_path / "wh")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):  # up to 60 s for imports and startup on a busy machine
            try:
                health = httpx.get(f"{base}/api/health", timeout=2.0)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    pytest.fail(proc.stdout.read().decode())
                time.sleep(0.1)
        else:
            pytest.fail("riskctl api did not start")
        # Act
        status = httpx.get(f"{base}/api/risk/status", timeout=10.0).json()
        refused = httpx.post(f"{base}/api/emergency/halt-trading", timeout=10.0,
                             json={"account_id": "*", "operator": "a", "authority_level": 1, "reason": "r"})
        # Assert: the wall clock is far past the fixture's cycles, so the pipeline reads as stale
        assert health.json()["status"] == "stale" and health.json()["cycle_id"] == "c2"
        assert status["status"] == "STALE"
        assert refused.status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)
