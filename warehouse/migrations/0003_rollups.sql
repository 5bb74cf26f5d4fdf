-- 0003: per-minute rollups. Per-cycle metrics older than `rollup_after_days` are folded
-- into these (min / max / last per minute) and the fine rows removed, so storage stays
-- bounded; the rollups follow the risk-metrics tier (1 year).
CREATE TABLE IF NOT EXISTS realtime_risk_metrics_1m (
    minute             TIMESTAMPTZ NOT NULL,
    account_id         VARCHAR NOT NULL,
    n_cycles           INTEGER NOT NULL,
    drawdown_min       DOUBLE,
    drawdown_max       DOUBLE,
    drawdown_last      DOUBLE,
    var_95_max         DOUBLE,
    var_95_last        DOUBLE,
    var_99_max         DOUBLE,
    var_99_last        DOUBLE,
    daily_loss_max     DOUBLE,
    var_95_breaches    INTEGER,              -- cycles in the minute with daily_loss > portfolio_var_95
    var_99_breaches    INTEGER,
    risk_score_max     INTEGER,
    alert_level_max    INTEGER,
    equity_usd_min     DECIMAL(18,4),
    equity_usd_max     DECIMAL(18,4),
    equity_usd_last    DECIMAL(18,4),
    leverage_max       DOUBLE,
    leverage_last      DOUBLE
);

CREATE TABLE IF NOT EXISTS position_risk_metrics_1m (
    minute                TIMESTAMPTZ NOT NULL,
    account_id            VARCHAR NOT NULL,
    currency_pair         VARCHAR NOT NULL,
    strategy_name         VARCHAR,
    n_cycles              INTEGER NOT NULL,
    position_size_last    DECIMAL(18,8),
    notional_usd_min      DECIMAL(18,4),
    notional_usd_max      DECIMAL(18,4),
    notional_usd_last     DECIMAL(18,4),
    unrealized_pnl_min    DECIMAL(18,4),
    unrealized_pnl_max    DECIMAL(18,4),
    unrealized_pnl_last   DECIMAL(18,4),
    position_var_95_max   DOUBLE,
    position_var_95_last  DOUBLE,
    risk_contribution_max DOUBLE,
    risk_contribution_last DOUBLE
);
