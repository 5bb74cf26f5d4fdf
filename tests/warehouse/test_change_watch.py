"""ChangeWatch: a reader learns which tables another process wrote, from the DuckLake snapshot log."""

from __future__ import annotations

import polars as pl

from risklib.warehouse import ChangeWatch, Warehouse
from warehouse_builders import T0, alert_rows, cycle


def _ack(wh: Warehouse, key: str) -> None:
    wh.append(
        "acknowledgements",
        pl.DataFrame({"incident_key": [key], "channel": ["sms"], "operator": ["op1"], "at": [T0]}),
        actor="op1",
        action="ack",
    )


def test_first_question_is_always_changed_then_only_real_writes_count(wh, wh_path):
    watch = ChangeWatch.for_warehouse(wh)
    assert watch.changed("r", ["acknowledgements"]) is True
    assert watch.changed("r", ["acknowledgements"]) is False
    # Another process writes an unrelated table: no change for this reader.
    other = Warehouse.open(wh_path, migrate=False)
    try:
        other.write_cycle(cycle("c1", T0, alerts=alert_rows(T0)))
        watch.refresh()
        assert watch.changed("r", ["acknowledgements"]) is False
        _ack(other, "A1:drawdown:1")
    finally:
        other.close()
    assert watch.changed("r", ["acknowledgements"]) is False  # not refreshed yet: the cycle has not looked
    watch.refresh()
    assert watch.changed("r", ["acknowledgements"]) is True
    assert watch.changed("r", ["acknowledgements"]) is False


def test_readers_are_independent_and_forget_forces_a_reread(wh):
    watch = ChangeWatch.for_warehouse(wh)
    watch.changed("a", ["alerts"])
    watch.changed("b", ["alerts"])
    wh.write_cycle(cycle("c1", T0, alerts=alert_rows(T0)))
    watch.refresh()
    assert watch.changed("a", ["alerts"]) is True
    assert watch.changed("a", ["alerts"]) is False
    assert watch.changed("b", ["alerts", "overrides"]) is True  # b has not looked since the write
    watch.forget("a")
    assert watch.changed("a", ["alerts"]) is True


def test_a_schema_change_counts_as_a_change_to_every_table(wh):
    watch = ChangeWatch.for_warehouse(wh)
    watch.changed("r", ["overrides"])
    wh.con.execute("CREATE TABLE scratch_for_watch (x INTEGER)")
    watch.refresh()
    assert watch.changed("r", ["overrides"]) is True


def test_a_watch_without_a_catalog_always_reports_a_change():
    watch = ChangeWatch.for_warehouse(object())
    assert watch.changed("r", ["alerts"]) is True
    assert watch.changed("r", ["alerts"]) is True


def test_a_catalog_that_cannot_be_read_counts_as_changed_for_every_reader(wh):
    calls = {"n": 0}
    real = ChangeWatch.for_warehouse(wh)._fetch

    def flaky(sql, params):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("catalog busy")
        return real(sql, params)

    watch = ChangeWatch(flaky)
    watch.changed("r", ["alerts"])  # first refresh: changes + table ids (two reads)
    assert watch.changed("r", ["alerts"]) is False
    watch.refresh()  # the third read fails
    assert watch.changed("r", ["alerts"]) is True
