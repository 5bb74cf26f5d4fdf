-- Every incident as a sequence of events: trigger -> alerts -> notifications ->
-- deliveries -> acknowledgements -> actions (long format, one row per event).
CREATE OR REPLACE VIEW incident_events AS
WITH first_alert AS (
    SELECT incident_key, min(ts) AS at FROM alerts GROUP BY incident_key
)
SELECT a.incident_key, a.ts AS at, CASE WHEN a.ts = f.at THEN 'trigger' ELSE 'alert' END AS kind,
       a.account_id, a.level, a.rule || ' ' || coalesce(CAST(a.metric_value AS VARCHAR), '?') || ' vs ' ||
       coalesce(CAST(a.threshold AS VARCHAR), '?') || coalesce(': ' || a.message, '') AS detail, a.cycle_id
FROM alerts a JOIN first_alert f USING (incident_key)
UNION ALL
SELECT n.incident_key, n.created_at, 'notification', NULL, n.level,
       n.channel || ' to ' || n.recipient || coalesce(' (tier ' || CAST(n.tier AS VARCHAR) || ')', ''), n.cycle_id
FROM notifications n
UNION ALL
SELECT n.incident_key, e."at", 'delivery:' || e.event, NULL, n.level,
       coalesce(e.provider, n.channel) || coalesce(' id=' || e.provider_message_id, '') || coalesce(' error=' || e.error, ''),
       e.cycle_id
FROM notification_events e JOIN notifications n USING (notification_id)
UNION ALL
SELECT incident_key, "at", 'acknowledgement', NULL, NULL, operator || ' via ' || channel, NULL
FROM acknowledgements
UNION ALL
SELECT incident_key, "timestamp", 'action', account_id, NULL,
       action_taken || coalesce(' fraction=' || CAST(fraction AS VARCHAR), '') || coalesce(' status=' || status, '') ||
       CASE WHEN manual_override THEN ' (manual, ' || coalesce(operator_id, '?') || ')' ELSE '' END,
       cycle_id
FROM emergency_actions WHERE incident_key IS NOT NULL;

-- One row per incident with its milestones; times in seconds from the trigger.
-- time_to_ack_s / time_to_act_s are NULL while nobody has acknowledged / acted.
CREATE OR REPLACE VIEW incident_timeline AS
WITH a AS (
    SELECT incident_key, any_value(account_id) AS account_id, arg_min(rule, ts) AS rule,
           min(ts) AS triggered_at, arg_min(metric_value, ts) AS trigger_value,
           arg_min(threshold, ts) AS trigger_threshold, max(level) AS max_level, count(*) AS n_alerts,
           max(ts) AS last_alert_at
    FROM alerts GROUP BY incident_key
), n AS (
    SELECT incident_key, count(*) AS n_notifications, min(created_at) AS first_notified_at
    FROM notifications GROUP BY incident_key
), d AS (
    SELECT n.incident_key, min(e."at") FILTER (WHERE e.event IN ('sent', 'delivered')) AS first_delivered_at,
           count(*) FILTER (WHERE e.event = 'failed') AS n_failed_deliveries
    FROM notification_events e JOIN notifications n USING (notification_id) GROUP BY n.incident_key
), k AS (
    SELECT incident_key, min("at") AS acknowledged_at, arg_min(operator, "at") AS acknowledged_by,
           arg_min(channel, "at") AS ack_channel
    FROM acknowledgements GROUP BY incident_key
), x AS (
    SELECT incident_key, min("timestamp") AS first_action_at, count(*) AS n_actions,
           string_agg(DISTINCT action_taken, ',') AS actions, bool_or(manual_override) AS any_manual
    FROM emergency_actions WHERE incident_key IS NOT NULL GROUP BY incident_key
), s AS (
    SELECT incident_key, arg_max(status, updated_at) AS status, max(resolved_at) AS resolved_at
    FROM incidents GROUP BY incident_key
)
SELECT a.incident_key, a.account_id, a.rule, a.triggered_at, a.trigger_value, a.trigger_threshold,
       a.max_level, a.n_alerts, a.last_alert_at,
       coalesce(n.n_notifications, 0) AS n_notifications, n.first_notified_at, d.first_delivered_at,
       coalesce(d.n_failed_deliveries, 0) AS n_failed_deliveries,
       k.acknowledged_at, k.acknowledged_by, k.ack_channel,
       x.first_action_at, coalesce(x.n_actions, 0) AS n_actions, x.actions, coalesce(x.any_manual, false) AS any_manual_action,
       s.status, s.resolved_at,
       epoch(n.first_notified_at) - epoch(a.triggered_at) AS time_to_notify_s,
       epoch(k.acknowledged_at) - epoch(a.triggered_at) AS time_to_ack_s,
       epoch(x.first_action_at) - epoch(a.triggered_at) AS time_to_act_s
FROM a
LEFT JOIN n USING (incident_key) LEFT JOIN d USING (incident_key) LEFT JOIN k USING (incident_key)
LEFT JOIN x USING (incident_key) LEFT JOIN s USING (incident_key);
