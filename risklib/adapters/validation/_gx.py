"""Great Expectations 1.x: one ephemeral context, built once, reused every cycle."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from ._rules import RULES, Rule

ROW = "_row"  # row number column GX reports failing rows by


def to_pandas(frame: pl.DataFrame) -> pd.DataFrame:
    """Polars → pandas without pyarrow: numbers zero-copy, strings as categoricals, UTC datetimes.

    Categoricals keep GX's per-row checks cheap (it compares codes, not Python strings).
    """
    out: dict[str, Any] = {ROW: np.arange(frame.height, dtype=np.int64)}
    for name, dtype in frame.schema.items():
        s = frame[name]
        if dtype == pl.String:
            uniq = s.drop_nulls().unique(maintain_order=True)
            codes = (
                pl.DataFrame({"v": s})
                .join(pl.DataFrame({"v": uniq, "c": pl.int_range(uniq.len(), eager=True, dtype=pl.Int32)}), on="v", how="left", maintain_order="left")["c"]
                .fill_null(-1)
                .to_numpy()
            )
            out[name] = pd.Categorical.from_codes(codes, categories=uniq.to_list())
        elif isinstance(dtype, pl.Datetime):
            arr = s.dt.replace_time_zone(None).cast(pl.Datetime("us")).to_numpy()
            out[name] = pd.Series(arr).dt.tz_localize("UTC")
        else:
            out[name] = s.to_numpy()
    return pd.DataFrame(out)


class GxSuites:
    """An ephemeral GX context with one pandas data asset and one suite per frame.

    Building it imports Great Expectations (seconds, once per process); each
    ``run`` then costs a batch and a suite validation. Progress bars are off
    (``ProgressBarsConfig(globally=False)``) and GX's own loggers are set to
    WARNING, so cycles leave no noise in the logs. Anonymous usage statistics
    are off (``GX_ANALYTICS_ENABLED=false``).
    """

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        import great_expectations.execution_engine.pandas_execution_engine as pandas_engine
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        # GX fingerprints every in-memory pandas batch below this size by hashing
        # all of it (about half the cost of a validation at 200k rows). The
        # fingerprint is only a batch marker; our batches are identified by the
        # snapshot time, so the engine's own large-frame path (no hash) is used.
        pandas_engine.HASH_THRESHOLD = 0
        self._gx = gx
        self._lock = threading.Lock()
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = self.context.data_sources.add_pandas("risk_inputs")
        self._batches = {}
        self._suites = {}
        self._rule_of: dict[str, dict[str, Rule]] = {}
        for suite_name, rules in RULES.items():
            asset = source.add_dataframe_asset(suite_name)
            self._batches[suite_name] = asset.add_batch_definition_whole_dataframe(f"{suite_name}_batch")
            suite = self.context.suites.add(gx.ExpectationSuite(name=f"{suite_name}_suite"))
            self._rule_of[suite_name] = {}
            for rule in rules:
                exp = suite.add_expectation(rule.expectation())
                self._rule_of[suite_name][str(exp.id)] = rule
            self._suites[suite_name] = suite

    def _suite_for(self, suite_name: str, rules: tuple[Rule, ...] | None) -> Any:
        """The whole suite, or a cached suite holding only ``rules`` (GX costs per expectation)."""
        if rules is None or len(rules) == len(RULES[suite_name]):
            return self._suites[suite_name]
        idx = tuple(sorted(RULES[suite_name].index(r) for r in rules))
        name = f"{suite_name}_suite_{'_'.join(map(str, idx))}"
        suite = self._suites.get(name)
        if suite is None:
            suite = self.context.suites.add(self._gx.ExpectationSuite(name=name))
            for i in idx:
                rule = RULES[suite_name][i]
                exp = suite.add_expectation(rule.expectation())
                self._rule_of[suite_name][str(exp.id)] = rule
            self._suites[name] = suite
        return suite

    def run(
        self, suite_name: str, frame: pl.DataFrame, values: dict[str, Any], rules: tuple[Rule, ...] | None = None
    ) -> dict[Rule, np.ndarray | None]:
        """Validate ``frame`` with the suite (or only ``rules`` of it).

        Returns per rule run the boolean failing-row mask (None if the expectation raised).
        """
        if rules is not None:  # GX needs only the columns its expectations read
            needed = list(dict.fromkeys(c for r in rules for c in r.columns))
            frame = frame.select(needed)
        df = to_pandas(frame)
        with self._lock:  # one GX context: one validation at a time
            return self._run(suite_name, df, frame.height, values, rules)

    def _run(
        self, suite_name: str, df: pd.DataFrame, height: int, values: dict[str, Any], rules: tuple[Rule, ...] | None
    ) -> dict[Rule, np.ndarray | None]:
        suite = self._suite_for(suite_name, rules)
        batch = self._batches[suite_name].get_batch(batch_parameters={"dataframe": df})
        params = {k: (list(v) if isinstance(v, (set, frozenset, tuple)) else v) for k, v in values.items()}
        res = batch.validate(
            suite,
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": [ROW],
                "return_unexpected_index_query": False,
                "partial_unexpected_count": 0,
            },
            expectation_parameters=params,
        )
        out: dict[Rule, np.ndarray | None] = {}
        for r in res.results:
            rule = self._rule_of[suite_name][str(r.expectation_config.id)]
            if _raised(r.exception_info):
                out[rule] = None
                continue
            mask = np.zeros(height, dtype=bool)
            for item in r.result.get("unexpected_index_list") or []:
                mask[int(item[ROW] if isinstance(item, dict) else item)] = True
            out[rule] = mask
        return out


def _raised(info: Any) -> bool:
    """GX reports exceptions either flat or keyed by metric; True if any was raised."""
    if not info:
        return False
    if "raised_exception" in info:
        return bool(info["raised_exception"])
    return any(isinstance(v, dict) and v.get("raised_exception") for v in info.values())
