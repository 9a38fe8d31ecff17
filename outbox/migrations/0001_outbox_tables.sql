-- The CRM's outbox tables, as its own code writes them. IF NOT EXISTS: on the CRM's
-- database they are already there and this changes nothing.
CREATE TABLE IF NOT EXISTS outbox_events (
    id BIGSERIAL PRIMARY KEY,
    tenant_id UUID NOT NULL,
    type VARCHAR(200) NOT NULL,
    payload JSONB NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ,
    retry_count INTEGER DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS IX_outbox_events_published_occurred ON outbox_events (published_at, occurred_at);
CREATE INDEX IF NOT EXISTS IX_outbox_events_tenant ON outbox_events (tenant_id);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    id BIGSERIAL PRIMARY KEY,
    tenant_id UUID NOT NULL,
    key VARCHAR(200) NOT NULL,
    request_path VARCHAR(500) NOT NULL,
    request_method VARCHAR(10) NOT NULL,
    status_code INTEGER NOT NULL,
    response_body TEXT,
    created_at TIMESTAMPTZ DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS IX_idempotency_keys_tenant_key ON idempotency_keys (tenant_id, key);
CREATE INDEX IF NOT EXISTS IX_idempotency_keys_expires ON idempotency_keys (expires_at);
