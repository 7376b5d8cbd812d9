DROP TRIGGER services_fts_delete;
DROP TRIGGER services_fts_update;
DROP TRIGGER services_fts_insert;
DROP TABLE services_fts_map;
DROP TABLE services_fts;
