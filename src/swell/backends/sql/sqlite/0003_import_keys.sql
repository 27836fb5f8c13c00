-- The keys (64-bit hashes of uuid, else $insert_id) of the records each imported part holds, so a
-- re-import skips what an earlier one stored.
CREATE TABLE import_keys (
    project_id INTEGER NOT NULL, hour INTEGER NOT NULL, seq INTEGER NOT NULL, keys BLOB NOT NULL,
    PRIMARY KEY (project_id, hour, seq)) WITHOUT ROWID;
