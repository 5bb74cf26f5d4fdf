"""Warehouse benchmark: cycle append, year-long analyst query, reader-induced delay, bytes per day.

Figures (``python -m bench warehouse`` → ``bench/results/warehouse.json``):

* ``append_200k_ms`` — median time to commit one cycle of 200,000 position-metric rows
  plus 100 account rows, 100 risk-state rows and its audit entries (``write_cycle``:
  checks, one transaction, cycle_runs row, chained audit). Requirement ≤ 100 ms.
  ``append_200k_raw_ms`` is the same process's bare DuckLake INSERT of the position
  frame alone (no checks, no other tables), ``append_200k_ratio`` the quotient.
* ``query_52m_ms`` — median time of "daily max drawdown per account" over a year of
  per-minute rows for 100 accounts (52,560,000 rows in ``realtime_risk_metrics_1m``).
  Requirement ≤ 1 s. ``query_52m_duckdb_file_ms`` is the same query on a plain DuckDB
  file holding the same rows (the baseline), ``query_52m_ratio`` the quotient.
* ``reader_delay_max_ms`` — the largest extra time a cycle write took while two reader
  processes (an API poller and an analyst query loop) ran, over the median write
  without readers (the readers paused; writes with and without readers alternate).
  Requirement ≤ 50 ms. Also ``reader_delay_p50_ms``.
* ``bytes_per_day`` — storage of one day of per-cycle data at the benchmark load
  (200,000 positions, 100 accounts, a cycle every 5 minutes = 288 cycles a day);
  ``bytes_per_day_rolled`` the same day after the rollups (accounts per minute, positions
  per hour).

Timings on a shared 2-core machine are noisy; the ratios against same-process
baselines are the steadier numbers.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from bench._harness import ms, time_calls

N_POSITIONS = 200_000
N_ACCOUNTS = 100
CYCLES_PER_DAY = 288  # the spec's normal cadence: one cycle every 5 minutes
T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)

_READER = r"""
import sys, time
from pathlib import Path
from risklib.warehouse import Warehouse, load_config
cfg = load_config().model_copy(update={"threads": 1})
wh = Warehouse.open(sys.argv[1], read_only=True, config=cfg)
stop, kind = Path(sys.argv[2]), sys.argv[3]
pause, paused = stop.with_name("pause-readers"), stop.with_name(f"paused-{kind}")
n = 0
wh.last_heartbeat()
print("ready", flush=True)
while not stop.exists():
    if pause.exists():
        paused.touch()
        time.sleep(0.005)
        continue
    paused.unlink(missing_ok=True)
    if kind == "api":
        wh.latest_risk_state(); wh.last_heartbeat(); time.sleep(0.05)
    else:
        wh.query("SELECT account_id, max(portfolio_drawdown) FROM realtime_risk_metrics GROUP BY ALL")
        wh.query("SELECT count(*) FROM position_risk_metrics WHERE account_id = 'A007'")
        time.sleep(0.2)
    n += 1
print(n)
"""


def _positions(at: datetime, rng: np.random.Generator) -> pl.DataFrame:
    acc = np.arange(N_POSITIONS) % N_ACCOUNTS
    pairs = np.array(["EUR/USD", "GBP/USD", "USD/JPY", "AUD/USD", "USD/CHF", "USD/CAD", "NZD/USD"])
    return pl.DataFrame(
        {
            "account_id": [f"A{a:03d}" for a in acc],
            # (account, strategy, instrument) identifies a position, as in frames.POSITIONS
            "strategy": [f"s{i // (N_ACCOUNTS * len(pairs))}" for i in range(N_POSITIONS)],
            "instrument": pairs[(np.arange(N_POSITIONS) // N_ACCOUNTS) % len(pairs)],
            "quantity": rng.normal(0, 1e5, N_POSITIONS).round(2),
            "price": rng.uniform(0.6, 1.6, N_POSITIONS).round(5),
            "notional_usd": rng.normal(0, 1e5, N_POSITIONS).round(2),
            "unrealized_pnl_usd": rng.normal(0, 1e3, N_POSITIONS).round(2),
            "position_var_95": rng.uniform(0, 0.01, N_POSITIONS),
            "volatility_score": rng.uniform(0.5, 2, N_POSITIONS),
            "correlation_risk": rng.uniform(0, 1, N_POSITIONS),
            "risk_contribution": rng.uniform(0, 0.01, N_POSITIONS),
            "ts": [at] * N_POSITIONS,
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def _accounts(at: datetime, rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame]:
    ids = [f"A{a:03d}" for a in range(N_ACCOUNTS)]
    metrics = pl.DataFrame(
        {
            "account_id": ids, "account_group": "g", "equity_usd": rng.uniform(9e5, 1.1e6, N_ACCOUNTS).round(2),
            "drawdown": rng.uniform(0, 0.1, N_ACCOUNTS), "daily_loss": rng.uniform(0, 0.03, N_ACCOUNTS),
            "var_95": rng.uniform(0.005, 0.02, N_ACCOUNTS), "var_99": rng.uniform(0.01, 0.03, N_ACCOUNTS),
            "es_99": rng.uniform(0.01, 0.04, N_ACCOUNTS), "regime": "NORMAL", "risk_score": rng.uniform(0, 100, N_ACCOUNTS),
            "alert_level": rng.integers(0, 3, N_ACCOUNTS), "leverage": rng.uniform(0, 3, N_ACCOUNTS), "valid": True,
            "ts": [at] * N_ACCOUNTS,
        }
    )
    state = pl.DataFrame(
        {
            "account_id": ids, "ts": [at] * N_ACCOUNTS, "episode_id": "e0", "alert_level": 0, "breaker_state": "CLOSED",
            "trading_mode": "ACTIVE", "risk_level": "LOW", "sizing_multiplier": 1.0, "max_leverage": 3.0,
            "next_cadence_s": 300.0, "peak_equity_usd": 1e6, "hysteresis": 0,
        }
    )
    return metrics, state


def _cycle(k: int, rng: np.random.Generator):
    from risklib.warehouse import CycleRecords

    at = T0 + timedelta(minutes=5 * k)
    metrics, state = _accounts(at, rng)
    return CycleRecords(
        cycle_id=f"bench-{k}", flow_run_id=None, started_at=at, finished_at=at + timedelta(seconds=1),
        stage_ms={"ingest": 1.0, "metrics": 20.0}, n_accounts=N_ACCOUNTS, next_interval_s=300.0,
        tables={"position_risk_metrics": _positions(at, rng), "realtime_risk_metrics": metrics, "risk_state": state},
        audit=[{"actor": "policy", "action": "evaluate", "subject": "book", "detail": {"alerts": 0}}],
    )


def _bench_append(root: Path, rng: np.random.Generator) -> dict[str, float]:
    from risklib.adapters.warehouse._warehouse import _Stream
    from risklib.warehouse import Warehouse

    wh = Warehouse.open(root / "append")
    cycles = [_cycle(k, rng) for k in range(8)]
    it = iter(cycles)
    times = time_calls(lambda: wh.write_cycle(next(it)), repeat=7, warmup=1)
    raw_frame = wh.prepare("position_risk_metrics", cycles[0].tables["position_risk_metrics"], cycle_id="raw")
    wh.con.execute("CREATE TABLE raw_positions AS SELECT * FROM position_risk_metrics LIMIT 0")

    def raw() -> None:
        wh.con.register("raw_in", _Stream(raw_frame))
        wh.con.execute("BEGIN")
        wh.con.execute("INSERT INTO raw_positions SELECT * FROM raw_in")
        wh.con.execute("COMMIT")
        wh.con.unregister("raw_in")

    raw_times = time_calls(raw, repeat=5, warmup=1)
    wh.con.execute("DROP TABLE raw_positions")
    # Storage of the 8 cycles written (Parquet data files), per day at 288 cycles/day.
    info = wh.con.execute(
        "SELECT sum(file_size_bytes) FROM ducklake_table_info('wh') WHERE table_name IN "
        "('position_risk_metrics', 'realtime_risk_metrics', 'risk_state', 'cycle_runs', 'audit_log')"
    ).fetchone()[0]
    per_cycle = info / len(cycles)
    from risklib.warehouse import run_retention

    run_retention(wh, T0 + timedelta(days=40), compact=True)
    rolled = wh.con.execute(
        "SELECT sum(file_size_bytes) FROM ducklake_table_info('wh') WHERE table_name IN "
        "('position_risk_metrics_1h', 'realtime_risk_metrics_1m')"
    ).fetchone()[0]
    wh.close()
    med, raw_med = statistics.median(times), statistics.median(raw_times)
    return {
        "append_200k_ms": ms(med),
        "append_200k_p95_ms": ms(float(np.percentile(times, 95))),
        "append_200k_raw_ms": ms(raw_med),
        "append_200k_ratio": round(med / raw_med, 2),
        "bytes_per_day": float(round(per_cycle * CYCLES_PER_DAY)),
        "bytes_per_day_rolled": float(round(rolled / len(cycles) * CYCLES_PER_DAY)),
    }


def _bench_small_cycles(root: Path, rng: np.random.Generator) -> dict[str, float]:
    """A cycle of account rows only (the common case), with and without DuckLake data inlining."""
    from risklib.warehouse import CycleRecords, Warehouse, load_config

    out = {}
    for name, limit in (("append_small_cycle_ms", 0), ("append_small_cycle_inlined_ms", 1000)):
        cfg = load_config().model_copy(update={"data_inlining_row_limit": limit})
        wh = Warehouse.open(root / f"small-{limit}", config=cfg)
        counter = iter(range(10_000))

        def write() -> None:
            k = next(counter)
            at = T0 + timedelta(seconds=30 * k)
            metrics, state = _accounts(at, rng)
            wh.write_cycle(CycleRecords(f"s{k}", None, at, at, tables={"realtime_risk_metrics": metrics, "risk_state": state},
                                        n_accounts=N_ACCOUNTS))

        out[name] = ms(statistics.median(time_calls(write, repeat=15, warmup=2)))
        wh.close()
    return out


def _bench_reader_delay(root: Path, rng: np.random.Generator) -> dict[str, float]:
    from risklib.warehouse import Warehouse

    path = root / "append"  # reuses the warehouse filled above (8 cycles + rollups)
    wh = Warehouse.open(path)
    rounds = 8
    cycles = iter([_cycle(100 + k, rng) for k in range(2 * rounds + 1)])
    stop, pause = root / "stop-readers", root / "pause-readers"
    kinds = ("api", "analyst")
    readers = [
        subprocess.Popen([sys.executable, "-c", _READER, str(path), str(stop), kind], stdout=subprocess.PIPE, text=True)
        for kind in kinds
    ]
    for r in readers:  # wait until each reader has attached and answered once
        assert r.stdout is not None and r.stdout.readline().strip() == "ready"
    wh.write_cycle(next(cycles))  # warm-up

    def write_with_readers(active: bool) -> float:
        if active:
            pause.unlink(missing_ok=True)
            time.sleep(0.1)  # both readers back in their query loops
        else:
            pause.touch()
            while not all((root / f"paused-{k}").exists() for k in kinds):
                time.sleep(0.005)
        t0 = time.perf_counter()
        wh.write_cycle(next(cycles))
        return time.perf_counter() - t0

    # Alternate writes without and with the readers running, so both sets meet the same
    # background load on a shared machine (a drift between two separate blocks of writes
    # used to show up as reader delay).
    alone, together = [], []
    for _ in range(rounds):
        alone.append(write_with_readers(False))
        together.append(write_with_readers(True))
    stop.write_text("stop")
    pause.unlink(missing_ok=True)
    reads = [int(r.communicate(timeout=300)[0].strip() or 0) for r in readers]
    wh.close()
    base = statistics.median(alone)
    extra = np.maximum(np.array(together) - base, 0.0)
    return {
        "reader_delay_max_ms": ms(float(extra.max())),
        "reader_delay_p50_ms": ms(float(np.median(extra))),
        "write_alone_median_ms": ms(base),
        "reader_queries_during_writes": float(sum(reads)),
    }


def _bench_query(root: Path) -> dict[str, float]:
    import duckdb

    from risklib.warehouse import Warehouse

    minutes = 365 * 24 * 60
    gen = f"""
        SELECT TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_minutes(m) AS minute,
               CAST(TIMESTAMP '2025-01-01 00:00:00' + to_minutes(m) AS DATE) AS "day",
               'A' || lpad(CAST(a AS VARCHAR), 3, '0') AS account_id,
               5 AS n_cycles,
               abs(sin(m / 997.0 + a)) * 0.1 AS drawdown_max
        FROM range({minutes}) t(m), range({N_ACCOUNTS}) s(a)
    """
    sql = (
        'SELECT account_id, "day", max(drawdown_max) AS max_drawdown '
        "FROM realtime_risk_metrics_1m GROUP BY ALL"
    )
    wh = Warehouse.open(root / "query")
    wh.con.execute(
        'INSERT INTO realtime_risk_metrics_1m (minute, "day", account_id, n_cycles, drawdown_max) ' + gen
    )
    n = wh.con.execute("SELECT count(*) FROM realtime_risk_metrics_1m").fetchone()[0]
    lake = time_calls(lambda: wh.con.execute(sql).fetchall(), repeat=5, warmup=1)
    wh.close()
    con = duckdb.connect(str(root / "baseline.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE TABLE realtime_risk_metrics_1m AS {gen}")
    base = time_calls(lambda: con.execute(sql).fetchall(), repeat=5, warmup=1)
    con.close()
    lake_med, base_med = statistics.median(lake), statistics.median(base)
    return {
        "query_52m_ms": ms(lake_med),
        "query_52m_rows": float(n),
        "query_52m_duckdb_file_ms": ms(base_med),
        "query_52m_ratio": round(lake_med / base_med, 2),
    }


def run() -> dict[str, float]:
    rng = np.random.default_rng(7)
    root = Path(tempfile.mkdtemp(prefix="bench-warehouse-"))
    try:
        out: dict[str, float] = {}
        for phase in (_bench_append, _bench_small_cycles, _bench_reader_delay, _bench_query):
            t = time.perf_counter()
            figures = phase(root) if phase is _bench_query else phase(root, rng)
            print(f"  [{phase.__name__} {time.perf_counter() - t:.0f}s] {figures}", file=sys.stderr, flush=True)
            out |= figures
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)
