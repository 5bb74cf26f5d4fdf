"""Every area's config loader reads its file the same way and names the file when it cannot."""

from __future__ import annotations

import re

import pytest

from risklib.adapters.feeds import load_pipeline_config
from risklib.adapters.warehouse import load_config as load_warehouse_config
from risklib.config import load_config, load_escalation_config, load_policy_config
from risklib.errors import ConfigError

LOADERS = {
    "whole file": load_config,
    "policy": load_policy_config,
    "escalation": load_escalation_config,
    "warehouse": load_warehouse_config,
    "pipeline": load_pipeline_config,
}


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_a_missing_file_is_named(loader, tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(f"config={str(missing)!r}: file not found")):
        loader(missing)


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_a_file_that_is_not_toml_is_named(loader, tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[policy\nthreshold = ")
    with pytest.raises(ConfigError, match=re.escape(f"config={str(broken)!r}: not valid TOML: ")):
        loader(broken)


def test_the_escalation_table_of_the_whole_file_is_validated_with_the_file_named(tmp_path):
    # Arrange
    f = tmp_path / "risk.toml"
    f.write_text("[escalation]\ninhibit_from_level = 9\n")
    # Act / Assert
    with pytest.raises(ConfigError, match=r"^risk\.toml: escalation\.inhibit_from_level=9: "):
        load_config(f)
