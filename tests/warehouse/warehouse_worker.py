"""A writer or reader process for the concurrency test: ``python warehouse_worker.py ROLE PATH ...``.

Prints one JSON line with what it did.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from risklib.warehouse import CycleRecords, Warehouse

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
ROWS_PER_CYCLE = 500


def writer(path: str, n_cycles: int, done_flag: str) -> dict:
    wh = Warehouse.open(path, migrate=False)
    write_ms = []
    for k in range(n_cycles):
        at = T0 + timedelta(seconds=k)
        pos = pl.DataFrame(
            {
                "account_id": [f"A{i % 50}" for i in range(ROWS_PER_CYCLE)],
                "instrument": ["EUR/USD"] * ROWS_PER_CYCLE,
                "strategy": ["s"] * ROWS_PER_CYCLE,
                "quantity": [float(i) for i in range(ROWS_PER_CYCLE)],
                "ts": [at] * ROWS_PER_CYCLE,
            }
        )
        rec = CycleRecords(f"c{k}", None, at, at, tables={"position_risk_metrics": pos},
                           audit=[{"actor": "test", "action": "write", "subject": f"c{k}"}], n_accounts=ROWS_PER_CYCLE)
        t = time.perf_counter()
        wh.write_cycle(rec)
        write_ms.append((time.perf_counter() - t) * 1e3)
    wh.close()
    Path(done_flag).write_text("done")
    return {"role": "writer", "cycles": n_cycles, "write_ms": write_ms}


def reader(path: str, done_flag: str, timeout_s: float) -> dict:
    wh = Warehouse.open(path, read_only=True)
    seen: set[int] = set()
    queries = torn = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        finished = Path(done_flag).exists()
        # One statement = one snapshot: a whole cycle or none of it must be visible.
        rows, expected, cycles, audited = wh.con.execute(
            "SELECT (SELECT count(*) FROM position_risk_metrics), "
            "(SELECT coalesce(sum(n_accounts), 0) FROM cycle_runs WHERE status = 'completed'), "
            "(SELECT count(*) FROM cycle_runs), "
            "(SELECT count(*) FROM audit_log WHERE action = 'cycle.record')"
        ).fetchone()
        queries += 1
        if rows != expected or cycles != audited:
            torn += 1
        seen.add(int(cycles))
        if finished:
            break
    wh.close()
    return {"role": "reader", "queries": queries, "torn": torn, "distinct_cycle_counts": len(seen), "max_cycles": max(seen)}


if __name__ == "__main__":
    role, path = sys.argv[1], sys.argv[2]
    if role == "writer":
        out = writer(path, int(sys.argv[3]), sys.argv[4])
    else:
        out = reader(path, sys.argv[3], float(sys.argv[4]))
    print(json.dumps(out))
