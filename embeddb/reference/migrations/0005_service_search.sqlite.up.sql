-- Full-text search over services: an FTS5 index kept in sync by triggers.
-- Accents are kept, as PostgreSQL's 'simple' configuration does, so both find the same rows.
-- service_id is UNINDEXED (looked up, not searched); rowids of services are not used because
-- VACUUM may renumber them in a table without an INTEGER PRIMARY KEY.

CREATE VIRTUAL TABLE services_fts USING fts5(
    service_id UNINDEXED,
    name,
    description,
    tokenize = 'unicode61 remove_diacritics 0'
);

INSERT INTO services_fts (service_id, name, description)
SELECT id, name, description FROM services;

CREATE TRIGGER services_fts_insert AFTER INSERT ON services BEGIN
    INSERT INTO services_fts (service_id, name, description)
    VALUES (new.id, new.name, new.description);
END;

CREATE TRIGGER services_fts_update AFTER UPDATE OF name, description ON services BEGIN
    DELETE FROM services_fts WHERE service_id = old.id;
    INSERT INTO services_fts (service_id, name, description)
    VALUES (new.id, new.name, new.description);
END;

CREATE TRIGGER services_fts_delete AFTER DELETE ON services BEGIN
    DELETE FROM services_fts WHERE service_id = old.id;
END;
