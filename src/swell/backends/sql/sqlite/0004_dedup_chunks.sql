-- The insert_id dedup window as packed keys: one row per (hour of first sight, checkpoint), each
-- a blob of little-endian int64 keys. The per-day dedup_YYYYMMDD tables of earlier versions are
-- converted into it the first time the window is loaded.
CREATE TABLE dedup_chunks (id INTEGER PRIMARY KEY, hour INTEGER NOT NULL, keys BLOB NOT NULL);
CREATE INDEX dedup_chunks_hour ON dedup_chunks(hour);
