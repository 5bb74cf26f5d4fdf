-- Data-quality history: quarantined input rows per day, source and rule, and how many
-- cycles were affected.
CREATE OR REPLACE VIEW data_quality_history AS
SELECT CAST(date_trunc('day', "at") AS DATE) AS day, source, rule, count(*) AS n_rows,
       count(DISTINCT cycle_id) AS n_cycles, min("at") AS first_at, max("at") AS last_at
FROM quarantine
GROUP BY ALL
ORDER BY day DESC, n_rows DESC;

-- Cycle health per day: completed / failed cycles and stage timings.
CREATE OR REPLACE VIEW cycle_health AS
SELECT CAST(date_trunc('day', started_at) AS DATE) AS day,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       median(epoch(finished_at) - epoch(started_at)) AS median_cycle_s,
       max(epoch(finished_at) - epoch(started_at)) AS max_cycle_s
FROM cycle_runs
GROUP BY ALL
ORDER BY day DESC;
