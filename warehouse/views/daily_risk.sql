-- Daily risk per account: max drawdown, VaR breaches (cycles whose daily loss exceeded
-- the VaR then in force), worst alert level, equity range. Combines recent per-cycle
-- rows with the per-minute rollups that replace them after `rollup_after_days`.
CREATE OR REPLACE VIEW daily_risk_by_account AS
WITH m AS (
    SELECT CAST(date_trunc('day', "timestamp") AS DATE) AS day, account_id,
           max(portfolio_drawdown) AS max_drawdown,
           count(*) FILTER (WHERE daily_loss > portfolio_var_95) AS var_95_breaches,
           count(*) FILTER (WHERE daily_loss > portfolio_var_99) AS var_99_breaches,
           max(portfolio_var_99) AS max_var_99, max(alert_level) AS worst_metric_alert_level,
           min(equity_usd) AS min_equity_usd, max(equity_usd) AS max_equity_usd, count(*) AS n_cycles
    FROM realtime_risk_metrics GROUP BY ALL
    UNION ALL
    SELECT coalesce("day", CAST(minute AS DATE)), account_id, max(drawdown_max), sum(var_95_breaches)::BIGINT,
           sum(var_99_breaches)::BIGINT, max(var_99_max), max(alert_level_max), min(equity_usd_min), max(equity_usd_max),
           sum(n_cycles)::BIGINT
    FROM realtime_risk_metrics_1m GROUP BY ALL
), d AS (
    SELECT day, account_id, max(max_drawdown) AS max_drawdown, sum(var_95_breaches)::BIGINT AS var_95_breaches,
           sum(var_99_breaches)::BIGINT AS var_99_breaches, max(max_var_99) AS max_var_99,
           max(worst_metric_alert_level) AS worst_metric_alert_level, min(min_equity_usd) AS min_equity_usd,
           max(max_equity_usd) AS max_equity_usd, sum(n_cycles)::BIGINT AS n_cycles
    FROM m GROUP BY ALL
), al AS (
    SELECT CAST(date_trunc('day', ts) AS DATE) AS day, account_id, max(level) AS worst_alert_level, count(*) AS n_alerts
    FROM alerts GROUP BY ALL
)
SELECT d.day, d.account_id, d.max_drawdown, d.var_95_breaches, d.var_99_breaches, d.max_var_99,
       greatest(coalesce(d.worst_metric_alert_level, 0), coalesce(al.worst_alert_level, 0)) AS worst_alert_level,
       coalesce(al.n_alerts, 0) AS n_alerts, d.min_equity_usd, d.max_equity_usd, d.n_cycles
FROM d LEFT JOIN al USING (day, account_id);
