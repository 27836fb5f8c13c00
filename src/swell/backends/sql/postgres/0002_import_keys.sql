-- The keys (64-bit hashes of uuid, else $insert_id) of the records each imported part holds, so a
-- re-import skips what an earlier one stored (as sql/sqlite/0003_import_keys.sql).
CREATE TABLE import_keys (
    project_id bigint NOT NULL,
    hour integer NOT NULL,
    seq integer NOT NULL,
    keys bytea NOT NULL,
    PRIMARY KEY (project_id, hour, seq));
CREATE INDEX import_keys_hour ON import_keys (hour);
