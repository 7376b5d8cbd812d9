-- Tool executions, alerts, the audit log of writes and the transactional outbox.

CREATE TABLE tool_executions (
    id          UUID PRIMARY KEY,
    user_id     UUID REFERENCES users (id) ON DELETE SET NULL,
    service_id  UUID REFERENCES services (id) ON DELETE SET NULL,
    tool_id     TEXT NOT NULL,
    parameters  JSONB NOT NULL DEFAULT '{}',
    result      JSONB,
    status      TEXT NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'timeout')),
    duration_ms INTEGER CHECK (duration_ms >= 0),
    error       TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX tool_executions_created ON tool_executions (created_at);
CREATE INDEX tool_executions_tool_created ON tool_executions (tool_id, created_at);
CREATE INDEX tool_executions_user ON tool_executions (user_id);

CREATE TABLE alerts (
    id                UUID PRIMARY KEY,
    user_id           UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type              TEXT NOT NULL,
    config            JSONB NOT NULL DEFAULT '{}',
    status            TEXT NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'paused', 'triggered', 'disabled')),
    last_triggered_at TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX alerts_user ON alerts (user_id);
CREATE INDEX alerts_status ON alerts (status);

CREATE TABLE audit_log (
    id         UUID PRIMARY KEY,
    actor      TEXT,
    action     TEXT NOT NULL CHECK (action IN ('insert', 'update', 'delete')),
    table_name TEXT NOT NULL,
    row_id     TEXT NOT NULL,
    old_values JSONB,
    new_values JSONB,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX audit_log_row ON audit_log (table_name, row_id);
CREATE INDEX audit_log_created ON audit_log (created_at);

CREATE TABLE outbox_events (
    id           UUID PRIMARY KEY,
    topic        TEXT NOT NULL,
    payload      JSONB NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'processing', 'done', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    available_at TIMESTAMPTZ NOT NULL,
    last_error   TEXT,
    processed_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX outbox_events_status_available ON outbox_events (status, available_at);
