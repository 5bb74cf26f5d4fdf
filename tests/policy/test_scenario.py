"""A replayed crash and recovery: the sequence of levels, actions and cadence, as a readable table."""

from __future__ import annotations

from datetime import timedelta

from policy_builders import FEED_OK, T0, make_metrics

from risklib.core.policy import evaluate

# t (s), equity (peak 100k), vol ratio, VaR99  ->  alert, breaker, mode, actions ordered, next cadence (s)
SCENARIO = """
    t  equity  vol   var99  | alert breaker   mode         actions                 cadence
    0  100000  1.0  0.0005  | 0     CLOSED    ACTIVE       -                       300
  300   97500  1.2  0.0008  | 1     CLOSED    ACTIVE       -                       30
  330   94000  1.6  0.0012  | 2     CLOSED    ACTIVE       -                       5
  335   93800  1.7  0.0012  | 2     CLOSED    ACTIVE       REDUCE:0.2              30
  365   88000  2.5  0.0025  | 3     CLOSED    REDUCE_ONLY  HALT_ENTRIES            1
  366   87000  2.6  0.0026  | 3     CLOSED    REDUCE_ONLY  REDUCE:0.5              1
  367   84000  3.2  0.0030  | 5     OPEN      HALTED       HALT_ALL                1
  368   84500  3.1  0.0030  | 5     OPEN      HALTED       REDUCE:0.25             1
  369   85000  3.0  0.0030  | 5     OPEN      HALTED       CLOSE:0.3333            1
 1000   92000  1.8  0.0015  | 5     OPEN      HALTED       -                       1
 1400   96000  1.2  0.0008  | 4     OPEN      HALTED       -                       30
 1700   96000  1.2  0.0008  | 2     HALF_OPEN ACTIVE       RESUME                  30
 2600   96000  1.2  0.0008  | 1     CLOSED    ACTIVE       -                       30
"""


def _rows():
    for line in SCENARIO.strip().splitlines()[1:]:
        left, right = line.split("|")
        t, equity, vol, var = left.split()
        alert, breaker, mode, actions, cadence = right.split()
        yield (float(t), float(equity), float(vol), float(var)), (int(alert), breaker, mode, actions, float(cadence))


def test_crash_and_recovery_replay(cfg):
    prev = None
    got, want = [], []
    for (t, equity, vol, var), expected in _rows():
        # Arrange
        m = make_metrics({"equity_usd": equity, "peak_equity_usd": 100_000.0, "drawdown": 1 - equity / 100_000,
                          "vol_ratio": vol, "var_99": var, "var_99_parametric": var})
        # Act
        ev = evaluate(T0 + timedelta(seconds=t), m, prev, cfg, market=FEED_OK)
        prev = ev.state
        s = ev.state.row(0, named=True)
        acts = ",".join(
            a if a in ("HALT_ENTRIES", "HALT_ALL", "RESUME") else f"{a}:{round(f, 4):g}"
            for a, f in ev.actions.select("action", "fraction").iter_rows()
        ) or "-"
        got.append((s["alert_level"], s["breaker_state"], s["trading_mode"], acts, s["next_cadence_s"]))
        want.append(expected)
    # Assert: compare the whole table so a failure shows every row
    assert got == want
    # the episode is still open (drawdown level 1 held): cuts reached 80 % of the episode-start size
    # (drawdown 20 %, then 50 %, volatility's 70 %, drawdown's close of 50 %), each ordered once
    assert prev["cut_total"].item() == 0.8
    assert prev["episode_id"].item() == "A1:20260105T120500.000000Z"
