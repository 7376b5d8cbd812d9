DROP INDEX services_search_vector;
ALTER TABLE services DROP COLUMN search_vector;
