-- 0002: what the product needs besides the spec's tables.
-- `at` is a DuckDB keyword (AT TIME ZONE): write it as "at" in queries.
-- Event tables are APPEND-ONLY: a change is a new row, views give the current state
-- (DuckLake favours appends; an update rewrites files and hides history).

-- Per-account risk state after trigger evaluation (frames.RISK_STATE_CORE), one row per
-- account per cycle; the policy's extra bookkeeping columns are kept in state_json.
CREATE TABLE IF NOT EXISTS risk_state (
    account_id        VARCHAR NOT NULL,
    ts                TIMESTAMPTZ NOT NULL,
    cycle_id          VARCHAR NOT NULL,
    episode_id        VARCHAR,
    alert_level       INTEGER NOT NULL,      -- 0 none .. 5 crisis
    breaker_state     VARCHAR NOT NULL,      -- CLOSED | OPEN | HALF_OPEN
    trading_mode      VARCHAR NOT NULL,      -- ACTIVE | REDUCE_ONLY | HALTED | FLATTEN
    risk_level        VARCHAR,               -- MINIMAL .. EMERGENCY
    sizing_multiplier DOUBLE,                -- [0, 1]
    max_leverage      DOUBLE,
    next_cadence_s    DOUBLE,
    peak_equity_usd   DECIMAL(18,4),
    state_json        VARCHAR                -- JSON object of the policy's bookkeeping columns
);

-- Alerts (frames.ALERTS): one row per (incident, cycle) while a condition holds.
CREATE TABLE IF NOT EXISTS alerts (
    incident_key  VARCHAR NOT NULL,
    account_id    VARCHAR NOT NULL,
    rule          VARCHAR NOT NULL,
    level         INTEGER NOT NULL,          -- 1 informational .. 5 crisis
    metric_value  DOUBLE,
    threshold     DOUBLE,
    trading_mode  VARCHAR,
    message       VARCHAR,
    ts            TIMESTAMPTZ NOT NULL,
    cycle_id      VARCHAR
);

-- Incident lifecycle events: each change (open, escalate, update, resolve) is a new row.
CREATE TABLE IF NOT EXISTS incidents (
    incident_key VARCHAR NOT NULL,
    account_id   VARCHAR NOT NULL,
    rule         VARCHAR NOT NULL,
    level        INTEGER NOT NULL,
    opened_at    TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    resolved_at  TIMESTAMPTZ,
    status       VARCHAR NOT NULL,           -- open | acknowledged | resolved
    episode_id   VARCHAR,
    cycle_id     VARCHAR
);

-- The notification outbox: every message is written here before any provider is called.
CREATE TABLE IF NOT EXISTS notifications (
    notification_id VARCHAR NOT NULL,
    incident_key    VARCHAR,
    group_key       VARCHAR,
    level           INTEGER,
    channel         VARCHAR NOT NULL,        -- email | sms | voice | console
    recipient       VARCHAR NOT NULL,
    team            VARCHAR,
    tier            INTEGER,
    subject         VARCHAR,
    body            VARCHAR,
    reply_code      VARCHAR,
    dedup_key       VARCHAR,
    created_at      TIMESTAMPTZ NOT NULL,
    not_before      TIMESTAMPTZ,
    cycle_id        VARCHAR
);

-- Delivery history of each notification (at-least-once: attempts, retries, fallbacks).
CREATE TABLE IF NOT EXISTS notification_events (
    notification_id     VARCHAR NOT NULL,
    event               VARCHAR NOT NULL,    -- queued|attempt|sent|delivered|failed|retry_scheduled|fallback|suppressed|inhibited
    provider            VARCHAR,
    provider_message_id VARCHAR,
    attempt             INTEGER,
    error               VARCHAR,
    retry_at            TIMESTAMPTZ,
    "at"                  TIMESTAMPTZ NOT NULL,
    cycle_id            VARCHAR
);

CREATE TABLE IF NOT EXISTS acknowledgements (
    incident_key VARCHAR NOT NULL,
    reply_code   VARCHAR,
    channel      VARCHAR NOT NULL,           -- sms | voice | email | api | console
    recipient    VARCHAR,
    operator     VARCHAR NOT NULL,
    "at"           TIMESTAMPTZ NOT NULL,
    source_ip    VARCHAR
);

-- Inbound webhooks refused (bad signature, unknown sender): kept for forensics.
CREATE TABLE IF NOT EXISTS webhook_rejections (
    "at"             TIMESTAMPTZ NOT NULL,
    endpoint       VARCHAR NOT NULL,
    reason         VARCHAR NOT NULL,
    remote         VARCHAR,
    payload_digest VARCHAR                   -- sha256 of the body; the body itself is not kept
);

-- Manual overrides with the spec's documentation requirements.
CREATE TABLE IF NOT EXISTS overrides (
    override_id     VARCHAR NOT NULL,
    account_id      VARCHAR,                 -- NULL = whole book
    rule            VARCHAR,
    action          VARCHAR NOT NULL,
    new_value       VARCHAR,
    justification   VARCHAR NOT NULL,
    risk_assessment VARCHAR NOT NULL,
    duration_s      DOUBLE NOT NULL,
    recovery_plan   VARCHAR NOT NULL,
    operator        VARCHAR NOT NULL,
    authority_level INTEGER NOT NULL,        -- 1 .. 5 (spec's override authority levels)
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL
);

-- Policy and threshold changes (changing a threshold is an audited event).
CREATE TABLE IF NOT EXISTS threshold_changes (
    "key"     VARCHAR NOT NULL,
    old_value VARCHAR,
    new_value VARCHAR,
    operator  VARCHAR NOT NULL,
    reason    VARCHAR NOT NULL,
    "at"        TIMESTAMPTZ NOT NULL
);

-- Input rows that failed validation, kept raw with the rule they failed.
CREATE TABLE IF NOT EXISTS quarantine (
    cycle_id VARCHAR NOT NULL,
    source   VARCHAR NOT NULL,               -- ticks | positions | balances
    row_key  VARCHAR,
    raw_row  JSON,
    rule     VARCHAR NOT NULL,
    detail   VARCHAR,
    "at"       TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS broker_orders (
    order_id        VARCHAR NOT NULL,
    idempotency_key VARCHAR NOT NULL,
    account_id      VARCHAR NOT NULL,
    instrument      VARCHAR NOT NULL,
    side            VARCHAR NOT NULL,        -- BUY | SELL
    quantity        DECIMAL(18,8) NOT NULL,
    filled_quantity DECIMAL(18,8),
    status          VARCHAR NOT NULL,
    reason          VARCHAR,
    "at"              TIMESTAMPTZ NOT NULL,
    cycle_id        VARCHAR
);

CREATE TABLE IF NOT EXISTS broker_fills (
    fill_id    VARCHAR NOT NULL,
    order_id   VARCHAR NOT NULL,
    account_id VARCHAR NOT NULL,
    instrument VARCHAR NOT NULL,
    quantity   DECIMAL(18,8) NOT NULL,       -- signed, base currency units
    price      DECIMAL(18,8) NOT NULL,
    "at"         TIMESTAMPTZ NOT NULL,
    cycle_id   VARCHAR
);

-- One row per cycle attempt (completed or failed); the gate's heartbeat reads it.
CREATE TABLE IF NOT EXISTS cycle_runs (
    cycle_id        VARCHAR NOT NULL,
    flow_run_id     VARCHAR,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ NOT NULL,
    status          VARCHAR NOT NULL,        -- completed | failed
    error           VARCHAR,
    stage_ms        JSON,                    -- {"ingest": 3.1, ...} milliseconds per stage
    n_accounts      INTEGER,
    next_interval_s DOUBLE
);

-- Append-only, hash-chained audit log: hash = sha256(prev_hash || canonical entry).
-- Editing or deleting any entry breaks the chain at that entry (riskctl warehouse verify).
CREATE TABLE IF NOT EXISTS audit_log (
    seq       BIGINT NOT NULL,
    "at"        TIMESTAMPTZ NOT NULL,
    actor     VARCHAR NOT NULL,
    action    VARCHAR NOT NULL,
    subject   VARCHAR,
    detail    JSON,
    prev_hash VARCHAR NOT NULL,
    hash      VARCHAR NOT NULL
);
