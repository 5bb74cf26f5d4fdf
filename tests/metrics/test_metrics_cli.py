"""`riskctl metrics` end to end with real files: readable tables, JSON with conventions, exit 2 on bad files."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from risklib.cli import app
from risklib.metrics import MetricsConfig, historical_var_es

runner = CliRunner()


@pytest.fixture
def price_file(tmp_path, fx_returns) -> Path:
    prices = np.vstack([np.ones(3), np.cumprod(1 + fx_returns[:, :3], axis=0)]) * np.array([1.08, 150.0, 1.27])
    lines = ["date,EUR/USD,USD/JPY,GBP/USD"] + [
        f"2025-{1 + i // 28:02d}-{1 + i % 28:02d}," + ",".join(f"{x:.6f}" for x in row) for i, row in enumerate(prices[:250])
    ]
    path = tmp_path / "prices.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def positions_file(tmp_path) -> Path:
    path = tmp_path / "positions.csv"
    path.write_text("account,instrument,quantity\nacc1,EUR/USD,100000\nacc1,USD/JPY,-50000\nacc2,GBP/USD,20000\n")
    return path


def test_json_states_conventions_and_matches_the_library(price_file, positions_file):
    # Act
    result = runner.invoke(app, ["metrics", str(price_file), "--positions", str(positions_file), "--json"])
    # Assert
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in ("returns", "sign", "quantile_method", "periods_per_year", "vol_window", "normal_window"):
        assert key in report["conventions"]
    prices = np.loadtxt(price_file, delimiter=",", skiprows=1, usecols=(1, 2, 3))
    r = prices[1:] / prices[:-1] - 1
    want = historical_var_es(r.T)["var_99"]
    got = [i["var_99"] for i in report["instruments"]]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert {a["account_id"] for a in report["accounts"]} == {"acc1", "acc2"}
    assert all(a["valid"] for a in report["accounts"])
    assert len(report["positions"]) == 3


def test_table_output_names_instruments_and_accounts(price_file, positions_file):
    result = runner.invoke(app, ["metrics", str(price_file), "--positions", str(positions_file)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    for text in ("Instruments", "EUR/USD", "var_99_parametric", "Accounts", "acc2", "risk_contribution", "correlation index"):
        assert text in result.output


def test_bad_price_cell_names_file_row_and_column(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("date,EUR/USD\n2025-01-01,1.1\n2025-01-02,abc\n")
    result = runner.invoke(app, ["metrics", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: row 3, column 'EUR/USD': value 'abc' is not a finite number > 0" in result.output


def test_non_positive_price_and_unknown_instrument_exit_2(tmp_path, price_file):
    neg = tmp_path / "neg.csv"
    neg.write_text("date,EUR/USD\n2025-01-01,1.1\n2025-01-02,-1\n")
    result = runner.invoke(app, ["metrics", str(neg)])
    assert result.exit_code == 2
    assert "row 3, column 'EUR/USD': value '-1' is not a finite number > 0" in result.output
    pos = tmp_path / "pos.csv"
    pos.write_text("account,instrument,quantity\nacc1,XAU/USD,1\n")
    result = runner.invoke(app, ["metrics", str(price_file), "--positions", str(pos)])
    assert result.exit_code == 2
    assert f"{pos}: row 2, column 'instrument': 'XAU/USD' is not a column of the price file" in result.output


def test_too_short_or_missing_file_exit_2(tmp_path):
    short = tmp_path / "short.csv"
    short.write_text("date,EUR/USD\n" + "".join(f"2025-01-{d:02d},{1 + d / 100}\n" for d in range(1, 11)))
    result = runner.invoke(app, ["metrics", str(short)])
    assert result.exit_code == 2
    assert "10 price rows give 9 returns; need at least 22" in result.output
    result = runner.invoke(app, ["metrics", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_shipped_toml_defaults_equal_the_model_defaults():
    path = Path(__file__).resolve().parents[2] / "risklib" / "defaults" / "metrics.toml"
    section = tomllib.loads(path.read_text())["metrics"]
    assert MetricsConfig(**section) == MetricsConfig()
    assert set(section) == set(MetricsConfig.model_fields)
