-- What the publisher and the publish endpoint add. Every new column is nullable, so
-- the CRM's own inserts keep working unchanged.

-- When a row was given up on (after max_retries attempts); NULL while it may still
-- be published. Re-queueing sets it back to NULL.
ALTER TABLE outbox_events ADD COLUMN IF NOT EXISTS failed_at TIMESTAMPTZ;
-- Rows the earlier publisher gave up on (5 attempts, its limit) are failed rows.
UPDATE outbox_events SET failed_at = now()
 WHERE published_at IS NULL AND failed_at IS NULL AND retry_count >= 5;

-- The rows to publish, in id order: a small index however large the table grows.
-- (On a large live table, create these two CONCURRENTLY first; IF NOT EXISTS then
-- skips them here.)
CREATE INDEX IF NOT EXISTS ix_outbox_events_pending ON outbox_events (id)
 WHERE published_at IS NULL AND failed_at IS NULL;
CREATE INDEX IF NOT EXISTS ix_outbox_events_failed ON outbox_events (id)
 WHERE published_at IS NULL AND failed_at IS NOT NULL;

-- The publish endpoint's request fingerprint: the same key with another request is 422.
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS request_fingerprint TEXT;

-- Wake the publisher at once on every insert (one notification per statement; the
-- poll interval stays as the fallback).
CREATE OR REPLACE FUNCTION crm_events_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('crm_events_outbox', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS crm_events_outbox_notify ON outbox_events;
CREATE TRIGGER crm_events_outbox_notify
    AFTER INSERT ON outbox_events
    FOR EACH STATEMENT EXECUTE FUNCTION crm_events_outbox_notify();
