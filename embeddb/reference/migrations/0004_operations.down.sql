DROP TABLE outbox_events;
DROP TABLE audit_log;
DROP TABLE alerts;
DROP TABLE tool_executions;
