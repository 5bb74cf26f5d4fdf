-- 0110: the correlation matrix the API serves (spec: "Correlation Matrix (1-minute updates)",
-- GET /api/risk/correlation-matrix). One row per unordered instrument pair per cycle
-- (instrument_a < instrument_b; the diagonal is 1 by definition and not stored), written
-- by the cycle from risklib.api._risk.correlation_rows.
CREATE TABLE IF NOT EXISTS correlation_snapshots (
    cycle_id     VARCHAR NOT NULL,
    ts           TIMESTAMPTZ NOT NULL,
    instrument_a VARCHAR NOT NULL,
    instrument_b VARCHAR NOT NULL,
    correlation  DOUBLE                -- Pearson correlation of returns in [-1, 1]; NULL when unknown
);
