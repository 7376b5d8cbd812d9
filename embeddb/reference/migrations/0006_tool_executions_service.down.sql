DROP INDEX tool_executions_service;
