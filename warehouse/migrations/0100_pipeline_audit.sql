-- What the pipeline records besides the spec's tables: every rule that fired in
-- a policy evaluation (the "why" of each decision) and every order the
-- pre-trade gate refused. Both belong to a cycle and land in its transaction.

CREATE TABLE IF NOT EXISTS rules_fired (
    account_id     VARCHAR NOT NULL,
    ts             TIMESTAMPTZ NOT NULL,
    cycle_id       VARCHAR NOT NULL,
    rule           VARCHAR NOT NULL,   -- ladder name, or data | breaker | override
    step           VARCHAR,            -- ladder step held, or the override outcome
    level          BIGINT,             -- ladder step index, 1-based (0 for non-ladder rows)
    alert_level    BIGINT,
    metric_value   DOUBLE,
    threshold      DOUBLE,
    basis          VARCHAR,            -- what the metric is measured against
    effect         VARCHAR,            -- sizing/mode/action/breaker effect, or why suspended
    suspended      BOOLEAN,            -- an override suspended this rule's effects
    incident_key   VARCHAR
);

CREATE TABLE IF NOT EXISTS gate_denials (
    ts                TIMESTAMPTZ NOT NULL,
    cycle_id          VARCHAR NOT NULL,
    account_id        VARCHAR NOT NULL,
    strategy          VARCHAR,
    instrument        VARCHAR,
    side              VARCHAR,
    quantity          DOUBLE,
    approved_quantity DOUBLE,
    reason            VARCHAR NOT NULL  -- the gate's reasons, codes first
);
