-- 0001: the spec's three tables, translated to DuckDB/DuckLake types, widened for many accounts.
--
-- Type choices (apply to every table in this directory):
--   * Timestamps are TIMESTAMPTZ (UTC).
--   * Money (USD amounts, prices, quantities) is DECIMAL: DECIMAL(18,4) for USD and
--     DECIMAL(18,8) for prices and position sizes (both fit a 64-bit integer, so they
--     stay fast). The spec's DECIMAL(15,8) for position_size caps a position at
--     9,999,999.99999999 units, below one 100-lot FX position; we widen it to
--     DECIMAL(18,8) (more protective: no insert can be refused or rounded for size).
--   * Risk fractions (drawdown, VaR, correlation, scores) are DOUBLE, not the spec's
--     DECIMAL(10,4): rounding to 4 places would record a 0.01996 drawdown as 0.0200
--     and misstate which threshold was crossed. Full precision is the protective reading.
--   * DuckLake has no PRIMARY KEY, UNIQUE, CHECK or INDEX; NOT NULL is enforced by the
--     catalog and the writer checks keys, enums and ranges before a transaction starts
--     (risklib/adapters/warehouse/_validate.py). Every statement is IF NOT EXISTS so a
--     migration can be re-applied safely.

-- One row per account per cycle. The spec's `timestamp TIMESTAMP PRIMARY KEY` is wrong
-- for a book of many accounts (all accounts share a cycle's timestamp); the natural key
-- here is (timestamp, account_id), unique per cycle_id.
CREATE TABLE IF NOT EXISTS realtime_risk_metrics (
    "timestamp"             TIMESTAMPTZ NOT NULL,
    cycle_id                VARCHAR NOT NULL,
    account_id              VARCHAR NOT NULL,
    account_group           VARCHAR,
    portfolio_drawdown      DOUBLE,          -- spec; = frames.ACCOUNT_METRICS.drawdown, fraction of peak
    portfolio_var_95        DOUBLE,          -- spec; 1-day historical VaR 95, fraction of equity
    portfolio_var_99        DOUBLE,          -- spec; 1-day historical VaR 99, fraction of equity
    volatility_regime       VARCHAR,         -- spec VARCHAR(20); = frames regime
    correlation_index       DOUBLE,          -- spec
    risk_score              INTEGER,         -- spec; 0-100 (rounded from the metric)
    alert_level             INTEGER,         -- spec; 0 none .. 5 crisis
    actions_taken           VARCHAR,         -- spec TEXT
    equity_usd              DECIMAL(18,4),
    start_of_day_equity_usd DECIMAL(18,4),
    peak_equity_usd         DECIMAL(18,4),
    unrealized_pnl_usd      DECIMAL(18,4),
    daily_pnl_usd           DECIMAL(18,4),
    daily_pnl_pct           DOUBLE,
    daily_loss              DOUBLE,
    gross_exposure_usd      DECIMAL(18,4),
    net_exposure_usd        DECIMAL(18,4),
    exposure_pct            DOUBLE,
    leverage                DOUBLE,
    es_99                   DOUBLE,
    var_99_parametric       DOUBLE,
    ewma_vol                DOUBLE,
    vol_ratio               DOUBLE,
    max_pair_correlation    DOUBLE,
    concentration           DOUBLE,
    n_positions             INTEGER,
    trading_mode            VARCHAR,
    valid                   BOOLEAN,
    invalid_reason          VARCHAR
);

-- One row per position per cycle. The spec's key (timestamp, currency_pair, strategy_name)
-- collides across accounts; the natural key here adds account_id.
CREATE TABLE IF NOT EXISTS position_risk_metrics (
    "timestamp"        TIMESTAMPTZ NOT NULL,
    cycle_id           VARCHAR NOT NULL,
    account_id         VARCHAR NOT NULL,
    currency_pair      VARCHAR NOT NULL,     -- spec VARCHAR(10); = frames instrument
    strategy_name      VARCHAR,              -- spec VARCHAR(50); = frames strategy
    position_size      DECIMAL(18,8),        -- spec DECIMAL(15,8), widened (see header); = quantity
    price              DECIMAL(18,8),
    notional_usd       DECIMAL(18,4),
    unrealized_pnl     DECIMAL(18,4),        -- spec DECIMAL(12,4) widened to 18 digits; USD
    position_var_95    DOUBLE,               -- spec; fraction of account equity
    volatility_score   DOUBLE,               -- spec
    correlation_risk   DOUBLE,               -- spec
    risk_contribution  DOUBLE                -- spec; component VaR 99, fraction of equity
);

-- The spec's `id BIGINT AUTO_INCREMENT PRIMARY KEY` has no DuckLake equivalent; rows are
-- identified by idempotency_key (one broker action per key) and ordered by timestamp.
CREATE TABLE IF NOT EXISTS emergency_actions (
    "timestamp"        TIMESTAMPTZ NOT NULL,
    cycle_id           VARCHAR,              -- NULL for manual actions outside a cycle
    account_id         VARCHAR NOT NULL,
    idempotency_key    VARCHAR NOT NULL,
    incident_key       VARCHAR,
    trigger_type       VARCHAR,              -- spec VARCHAR(50); e.g. drawdown, var, manual
    trigger_value      DOUBLE,               -- spec DECIMAL(12,4); a risk fraction, full precision
    action_taken       VARCHAR NOT NULL,     -- spec VARCHAR(100); REDUCE | CLOSE | CLOSE_ALL | HALT_* | RESUME
    fraction           DOUBLE,               -- share of each position cut, [0, 1]
    positions_affected VARCHAR,              -- spec TEXT; JSON list of positions
    manual_override    BOOLEAN NOT NULL,     -- spec
    operator_id        VARCHAR,              -- spec VARCHAR(50); NULL when automatic
    status             VARCHAR,              -- ordered | executed | failed | skipped
    reason             VARCHAR
);
