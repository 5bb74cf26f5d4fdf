-- Manual overrides with their documentation, newest first. `active` is judged against
-- the reader's clock (now()); expired overrides stay for the record.
CREATE OR REPLACE VIEW override_log AS
SELECT override_id, created_at, expires_at, operator, authority_level, account_id, rule, action, new_value,
       duration_s, justification, risk_assessment, recovery_plan,
       expires_at > now() AS active
FROM overrides
ORDER BY created_at DESC;

-- Policy and threshold changes: old value, new value, who, why.
CREATE OR REPLACE VIEW threshold_change_log AS
SELECT "at", "key", old_value, new_value, operator, reason FROM threshold_changes ORDER BY "at" DESC;
