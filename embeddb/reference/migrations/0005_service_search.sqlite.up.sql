-- Full-text search over services: an FTS5 index kept in sync by triggers.
-- Accents are kept, as PostgreSQL's 'simple' configuration does, so both find the same rows.
-- services has no integer key (and VACUUM may renumber its rowids), so services_fts_map
-- remembers which FTS row holds each service: updates and deletes find it by rowid instead of
-- scanning the index for the UNINDEXED service_id.

CREATE VIRTUAL TABLE services_fts USING fts5(
    service_id UNINDEXED,
    name,
    description,
    tokenize = 'unicode61 remove_diacritics 0'
);

CREATE TABLE services_fts_map (
    service_id TEXT PRIMARY KEY NOT NULL,
    fts_rowid  INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO services_fts (service_id, name, description)
SELECT id, name, description FROM services;

INSERT INTO services_fts_map (service_id, fts_rowid)
SELECT service_id, rowid FROM services_fts;

CREATE TRIGGER services_fts_insert AFTER INSERT ON services BEGIN
    INSERT INTO services_fts (service_id, name, description)
    VALUES (new.id, new.name, new.description);
    INSERT INTO services_fts_map (service_id, fts_rowid) VALUES (new.id, last_insert_rowid());
END;

CREATE TRIGGER services_fts_update AFTER UPDATE OF name, description ON services BEGIN
    DELETE FROM services_fts
    WHERE rowid = (SELECT fts_rowid FROM services_fts_map WHERE service_id = old.id);
    INSERT INTO services_fts (service_id, name, description)
    VALUES (new.id, new.name, new.description);
    UPDATE services_fts_map SET fts_rowid = last_insert_rowid() WHERE service_id = new.id;
END;

CREATE TRIGGER services_fts_delete AFTER DELETE ON services BEGIN
    DELETE FROM services_fts
    WHERE rowid = (SELECT fts_rowid FROM services_fts_map WHERE service_id = old.id);
    DELETE FROM services_fts_map WHERE service_id = old.id;
END;
