-- 0111: emergency controls asked for by operators over the API (POST /api/emergency/*).
-- The broker lives in the pipeline's process, so the API records the request here and the
-- running pipeline executes it at its next cycle (risklib.core.manual.pending_manual_actions),
-- once per request_id: the broker's idempotency key is "manual:<request_id>", and what was
-- done lands in emergency_actions under that key. Append-only like every event table.
CREATE TABLE IF NOT EXISTS manual_action_requests (
    request_id      VARCHAR NOT NULL,
    account_id      VARCHAR NOT NULL,     -- an account, or '*' for every account
    action          VARCHAR NOT NULL,     -- REDUCE | CLOSE | CLOSE_ALL | HALT_ENTRIES | HALT_ALL | RESUME
    fraction        DOUBLE NOT NULL,      -- share of each position to cut, (0, 1]; 0 for halts and resume
    operator        VARCHAR NOT NULL,
    authority_level INTEGER NOT NULL,     -- 1 .. 5 (spec's override authority levels)
    reason          VARCHAR NOT NULL,
    requested_at    TIMESTAMPTZ NOT NULL
);

-- Threshold changes record the authority under which they were made (spec: "Level 1:
-- Risk Manager (Threshold adjustments up to 20%)"); NULL for rows written before this column.
ALTER TABLE threshold_changes ADD COLUMN IF NOT EXISTS authority_level INTEGER;
