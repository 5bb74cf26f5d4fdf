-- Current state of each incident (incidents is append-only: the newest event wins).
CREATE OR REPLACE VIEW current_incidents AS
SELECT * FROM incidents
QUALIFY row_number() OVER (PARTITION BY incident_key ORDER BY updated_at DESC) = 1;

-- Newest risk state per account (what the pre-trade gate and the API read).
CREATE OR REPLACE VIEW current_risk_state AS
SELECT * FROM risk_state
QUALIFY row_number() OVER (PARTITION BY account_id ORDER BY ts DESC, cycle_id DESC) = 1;

-- Delivery status of each outbox message: its newest event.
CREATE OR REPLACE VIEW notification_status AS
SELECT n.*, e.event AS last_event, e."at" AS last_event_at, e.attempt AS attempts, e.provider_message_id
FROM notifications n
LEFT JOIN (
    SELECT * FROM notification_events
    QUALIFY row_number() OVER (PARTITION BY notification_id ORDER BY "at" DESC, attempt DESC NULLS LAST) = 1
) e USING (notification_id);
