"""The [warehouse] config: defaults from the spec, unknown keys and bad values refused."""

from __future__ import annotations

import pytest

from risklib.errors import ConfigError, WarehouseError
from risklib.warehouse import load_config
from risklib.adapters.warehouse._config import DEFAULT_LOCATION, resolve_location
from risklib.adapters.warehouse._connect import layout_for


def test_defaults_are_the_spec_tiers():
    # Act
    cfg = load_config()
    # Assert
    r = cfg.retention
    assert (r.risk_metrics_days, r.alerts_days, r.emergency_actions_days, r.audit_days) == (365, 730, 1825, 0)
    assert r.rollup_after_days == 30


def test_unknown_key_is_refused(tmp_path):
    # Arrange
    f = tmp_path / "w.toml"
    f.write_text("[warehouse]\nlocaton = 'x'\n")
    # Act / Assert
    with pytest.raises(ConfigError, match=r"w.toml: warehouse.locaton='x': Extra inputs are not permitted"):
        load_config(f)


def test_negative_tier_is_refused(tmp_path):
    f = tmp_path / "w.toml"
    f.write_text("[warehouse.retention]\nalerts_days = -1\n")
    with pytest.raises(ConfigError, match=r"warehouse.retention.alerts_days=-1"):
        load_config(f)


def test_audit_shorter_than_a_tier_is_refused(tmp_path):
    f = tmp_path / "w.toml"
    f.write_text("[warehouse.retention]\naudit_days = 400\n")
    with pytest.raises(ConfigError, match=r"audit_days=400: must be 0 \(forever\) or >= the longest tier \(1825\)"):
        load_config(f)


def test_location_precedence(monkeypatch, tmp_path):
    # Arrange
    cfg = load_config()
    monkeypatch.delenv("RISK_WAREHOUSE", raising=False)
    # Act / Assert
    assert resolve_location(None, cfg) == str(DEFAULT_LOCATION)
    monkeypatch.setenv("RISK_WAREHOUSE", str(tmp_path / "env"))
    assert resolve_location(None, cfg) == str(tmp_path / "env")
    assert resolve_location(tmp_path / "arg", cfg) == str(tmp_path / "arg")


def test_catalog_uri_needs_a_data_path():
    cfg = load_config()
    with pytest.raises(WarehouseError, match=r"a catalog URI needs warehouse.data_path"):
        layout_for("ducklake:postgres:dbname=risk", cfg)


def test_catalog_uri_is_used_as_is():
    cfg = load_config().model_copy(update={"data_path": "s3://bucket/risk/"})
    layout = layout_for("ducklake:postgres:dbname=risk host=db", cfg)
    assert (layout.catalog_uri, layout.data_path, layout.local_root) == (
        "ducklake:postgres:dbname=risk host=db", "s3://bucket/risk/", None,
    )
