"""`riskctl policy` commands."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from risklib.cli import app

runner = CliRunner()
WHAT_IF = ["policy", "what-if", "--drawdown", "0.055", "--vol-ratio", "2.1", "--var99", "0.003", "--daily-loss",
           "0.012", "--exposure", "0.4", "--risk-score", "70"]


def test_what_if_prints_rules_and_decision():
    # Act
    r = runner.invoke(app, WHAT_IF)
    # Assert
    assert r.exit_code == 0, r.output
    for text in ("drawdown    L2 position_reduction", "volatility  L2 defensive", "var         L2 orange",
                 "daily_loss  L1 daily_loss_warning", "trading mode      ACTIVE", "sizing multiplier 0.6",
                 "next cadence      1s", "eval 2: REDUCE 0.2"):
        assert text in r.output


def test_what_if_json():
    # Act
    r = runner.invoke(app, [*WHAT_IF, "--feed-silent-s", "130", "--json"])
    out = json.loads(r.output)
    # Assert: a 130 s silent feed closes everything
    assert r.exit_code == 0
    assert out["decision"]["trading_mode"] == "FLATTEN"
    assert out["decision"]["breaker_state"] == "OPEN"
    assert sorted(a["action"] for a in out["actions_now"]) == ["CLOSE_ALL", "HALT_ALL"]
    assert {f["rule"] for f in out["rules_fired"]} >= {"drawdown", "feed", "breaker"}


def test_what_if_refuses_percent_for_fraction():
    # Act
    r = runner.invoke(app, ["policy", "what-if", "--drawdown", "5.5", "--vol-ratio", "1", "--var99", "0.001"])
    # Assert
    assert r.exit_code == 2
    assert "--drawdown=5.5: must be a fraction in [0, 1); did you mean 0.055?" in r.output


def test_what_if_bad_config_file(tmp_path):
    # Arrange
    bad = tmp_path / "p.toml"
    bad.write_text("[policy]\nnormal_cadence_s = -1\n")
    # Act
    r = runner.invoke(app, [*WHAT_IF, "--config", str(bad)])
    # Assert
    assert r.exit_code == 2
    assert "policy.normal_cadence_s=-1: Input should be greater than 0" in r.output


def test_size_command():
    # Act
    r = runner.invoke(app, ["policy", "size", "--balance", "10000", "--volatility-pct", "12", "--risk-level", "LOW",
                            "--current-vol", "0.2", "--historical-vol", "0.1", "--drawdown", "0.05",
                            "--correlation", "0.3", "--var-utilization", "0.1", "--regime", "bull_low_vol", "--json"])
    out = json.loads(r.output)
    # Assert
    assert r.exit_code == 0
    assert out["inst_exact_usd"] == 60.0 and out["protective_usd"] == 60.0
    assert abs(out["rt_dynamic_multiplier"] - 0.21) < 1e-12


def test_size_refuses_bad_level():
    # Act
    r = runner.invoke(app, ["policy", "size", "--balance", "1000", "--volatility-pct", "5", "--risk-level", "HUGE"])
    # Assert
    assert r.exit_code == 2 and "--risk-level='HUGE'" in r.output


def test_check_config(tmp_path):
    # Arrange
    from risklib.config_files import DEFAULTS_DIR

    DEFAULT_CONFIG_PATH = DEFAULTS_DIR / "policy.toml"

    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT_CONFIG_PATH.read_text().replace("threshold = 0.15", "threshold = 15", 1))
    # Act
    ok = runner.invoke(app, ["policy", "check-config", str(DEFAULT_CONFIG_PATH)])
    ko = runner.invoke(app, ["policy", "check-config", str(bad)])
    # Assert
    assert ok.exit_code == 0 and "ok" in ok.output
    assert ko.exit_code == 2
    assert "policy.drawdown.levels[4].threshold=15: must be a fraction in (0, 1); did you mean 0.15?" in ko.output


def test_what_if_with_events_file(tmp_path):
    # Arrange
    ev = tmp_path / "events.csv"
    ev.write_text("ts,impact,name\n2026-01-05T12:10:00+00:00,High,NFP\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,impact,name\nyesterday,High,NFP\n")
    base = ["policy", "what-if", "--drawdown", "0.01", "--vol-ratio", "1", "--var99", "0.0005",
            "--at", "2026-01-05T12:00:00+00:00"]
    # Act
    ok = runner.invoke(app, [*base, "--events", str(ev), "--json"])
    ko = runner.invoke(app, [*base, "--events", str(bad)])
    # Assert
    assert ok.exit_code == 0 and json.loads(ok.output)["stress"]["primary"] == "economic_shock"
    assert ko.exit_code == 2 and "events row 0: ts='yesterday'" in ko.output
