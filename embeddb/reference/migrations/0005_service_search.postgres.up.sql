-- Full-text search over services: a generated tsvector (name weighs more than description)
-- with a GIN index. The 'simple' configuration matches SQLite's unicode61 tokenizer (no stemming)
-- so both backends find the same services.

ALTER TABLE services ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('simple', coalesce(name, '')), 'A') ||
    setweight(to_tsvector('simple', coalesce(description, '')), 'B')
) STORED;

CREATE INDEX services_search_vector ON services USING GIN (search_vector);
