-- Tool executions, alerts, the audit log of writes and the transactional outbox.

CREATE TABLE tool_executions (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT REFERENCES users (id) ON DELETE SET NULL,
    service_id  TEXT REFERENCES services (id) ON DELETE SET NULL,
    tool_id     TEXT NOT NULL,
    parameters  TEXT NOT NULL DEFAULT '{}',
    result      TEXT,
    status      TEXT NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'timeout')),
    duration_ms INTEGER CHECK (duration_ms >= 0),
    error       TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX tool_executions_created ON tool_executions (created_at);
CREATE INDEX tool_executions_tool_created ON tool_executions (tool_id, created_at);
CREATE INDEX tool_executions_user ON tool_executions (user_id);

CREATE TABLE alerts (
    id                TEXT PRIMARY KEY NOT NULL,
    user_id           TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type              TEXT NOT NULL,
    config            TEXT NOT NULL DEFAULT '{}',
    status            TEXT NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'paused', 'triggered', 'disabled')),
    last_triggered_at TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX alerts_user ON alerts (user_id);
CREATE INDEX alerts_status ON alerts (status);

CREATE TABLE audit_log (
    id         TEXT PRIMARY KEY NOT NULL,
    actor      TEXT,
    action     TEXT NOT NULL CHECK (action IN ('insert', 'update', 'delete')),
    table_name TEXT NOT NULL,
    row_id     TEXT NOT NULL,
    old_values TEXT,
    new_values TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX audit_log_row ON audit_log (table_name, row_id);
CREATE INDEX audit_log_created ON audit_log (created_at);

CREATE TABLE outbox_events (
    id           TEXT PRIMARY KEY NOT NULL,
    topic        TEXT NOT NULL,
    payload      TEXT NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'processing', 'done', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    available_at TEXT NOT NULL,
    last_error   TEXT,
    processed_at TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX outbox_events_status_available ON outbox_events (status, available_at);
