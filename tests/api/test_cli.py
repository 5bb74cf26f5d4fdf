"""`riskctl api`: bad input exits 2 naming it; the served app answers over real HTTP."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def _served(tmp_path, wh_template, env_extra: dict[str, str], args: tuple[str, ...] = ()):
    """`riskctl api` in a subprocess over a copy of the two-cycle warehouse; yields (base URL, process)."""
    shutil.copytree(wh_template, tmp_path / "wh")
    port = _free_port()
    # every credential in the environment, so no Prefect Secret block lookup slows the start
    env = {**os.environ, "TWILIO_ACCOUNT_SID": "AC0", "TWILIO_AUTH_TOKEN": "t0", "SENDGRID_API_KEY": "SG.0",
           **env_extra}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from risklib.cli import main; main()", "api", "--port", str(port),
         "--warehouse", str(tmp_path / "wh"), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):  # up to 60 s for imports and startup on a busy machine
            try:
                httpx.get(f"{base}/api/health", timeout=2.0)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    pytest.fail(proc.stdout.read().decode())
                time.sleep(0.1)
        else:
            pytest.fail("riskctl api did not start")
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serves_the_control_plane_over_http(tmp_path, wh_template):
    # Arrange: a token in the environment
    with _served(tmp_path, wh_template, {"RISK_API_TOKEN": "tok-123"}) as (base, _):
        # Act
        health = httpx.get(f"{base}/api/health", timeout=10.0)
        status = httpx.get(f"{base}/api/risk/status", timeout=10.0).json()
        refused = httpx.post(f"{base}/api/emergency/halt-trading", timeout=10.0,
                             json={"account_id": "*", "operator": "a", "authority_level": 1, "reason": "r"})
    # Assert: the wall clock is far past the fixture's cycles, so the pipeline reads as stale
    assert health.json()["status"] == "stale" and health.json()["cycle_id"] == "c2"
    assert status["status"] == "STALE"
    assert refused.status_code == 401


def test_operators_tokens_from_the_config_and_the_environment(tmp_path, wh_template):
    # Arrange: two operators in the config; only alice's token is in the environment
    cfg = tmp_path / "risk.toml"
    cfg.write_text('[escalation.credentials]\noperators = [\n'
                   '  { name = "alice", authority_level = 1, token_env = "TOK_ALICE" },\n'
                   '  { name = "carol", authority_level = 3, token_env = "TOK_CAROL" },\n]\n')
    halt = {"account_id": "A1", "operator": "alice", "authority_level": 1, "reason": "r"}
    with _served(tmp_path, wh_template, {"RISK_API_TOKEN": "shared", "TOK_ALICE": "alice-tok"},
                 ("--config", str(cfg))) as (base, proc):
        # Act
        own = httpx.post(f"{base}/api/emergency/halt-trading", json=halt, timeout=10.0,
                         headers={"Authorization": "Bearer alice-tok"})
        above = httpx.post(f"{base}/api/emergency/halt-trading", json={**halt, "authority_level": 3}, timeout=10.0,
                           headers={"Authorization": "Bearer alice-tok"})
        shared = httpx.post(f"{base}/api/emergency/halt-trading", json=halt, timeout=10.0,
                            headers={"Authorization": "Bearer shared"})
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    # Assert: what the start-up said, and what each token could do
    assert "operator 'alice': own token, authority level up to 1" in out
    assert "operator 'carol': $TOK_CAROL is not set" in out
    assert (own.status_code, above.status_code, shared.status_code) == (202, 403, 403)
