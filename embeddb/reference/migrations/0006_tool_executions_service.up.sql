-- Deleting a service sets tool_executions.service_id to NULL: without this index each delete
-- scans every execution (embeddb doctor reports it as fk_indexes).
CREATE INDEX tool_executions_service ON tool_executions (service_id);
