-- Every statement SQLiteMetadata runs (swell.backends.queries reads this file). The PostgreSQL
-- backend's sql/postgres/queries.sql uses the same names where the statements correspond.

-- name: month_tables
-- The user index's month tables that exist.
SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'user_blocks_%'

-- name: dedup_tables
SELECT name FROM sqlite_master WHERE type='table' AND name GLOB 'dedup_[0-9]*'

-- keys -------------------------------------------------------------------------------------------

-- name: insert_org
INSERT INTO orgs(name) VALUES (?)

-- name: insert_key
INSERT INTO api_keys(api_key, org_id, project_id, secret_hash) VALUES (?, ?, ?, ?)

-- name: org_exists
SELECT 1 FROM orgs WHERE id = ?

-- name: insert_project
-- Above every id used before, a deleted project's too.
INSERT INTO projects(id, org_id, name) VALUES ((SELECT max(
    COALESCE((SELECT MAX(id) FROM projects), 0),
    COALESCE((SELECT value FROM kv WHERE name = 'last_deleted_project'), 0)) + 1), ?, ?)

-- name: delete_owner_keys
-- Every key of an org (project_id NULL) or of one project.
DELETE FROM api_keys WHERE org_id = ? AND project_id IS ?

-- name: find_key
SELECT org_id, project_id, secret_hash FROM api_keys WHERE api_key = ?

-- name: all_orgs
SELECT id FROM orgs ORDER BY id

-- name: org_projects
SELECT id FROM projects WHERE org_id = ? ORDER BY id

-- name: list_orgs
SELECT o.id, o.name, o.created_at, COUNT(p.id) FROM orgs o
LEFT JOIN projects p ON p.org_id = o.id GROUP BY o.id ORDER BY o.id

-- name: list_projects
-- Every project (of one org, unless the org is NULL) with what its catalog holds.
SELECT p.id, p.org_id, p.name, p.created_at, COUNT(parts.seq), COALESCE(SUM(parts.events), 0)
FROM projects p LEFT JOIN parts ON parts.project_id = p.id
WHERE ? IS NULL OR p.org_id = ? GROUP BY p.id ORDER BY p.id

-- name: project_exists
SELECT 1 FROM projects WHERE id = ?

-- name: count_project_parts
SELECT COUNT(*) FROM parts WHERE project_id = ?

-- name: delete_project_rows
DELETE FROM {table} WHERE project_id = ?

-- name: delete_project_keys
DELETE FROM api_keys WHERE project_id = ?

-- name: delete_project
DELETE FROM projects WHERE id = ?

-- name: record_deleted_project
INSERT INTO kv VALUES ('last_deleted_project', ?)
ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)

-- catalog and user index -------------------------------------------------------------------------

-- name: create_month_table
-- One clustered user-index table per month of part hours, so each B-tree stays bounded.
CREATE TABLE IF NOT EXISTS {table} (
    project_id INTEGER NOT NULL, amplitude_id INTEGER NOT NULL, hour INTEGER NOT NULL,
    seq INTEGER NOT NULL, blocks BLOB NOT NULL, events INTEGER NOT NULL,
    PRIMARY KEY (project_id, amplitude_id, hour, seq)) WITHOUT ROWID

-- name: insert_part
INSERT INTO parts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: insert_user_blocks
INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)

-- name: insert_user_links
INSERT OR IGNORE INTO user_links VALUES (?, ?, ?)

-- name: insert_import_keys
INSERT INTO import_keys VALUES (?, ?, ?, ?)

-- name: import_keys
SELECT keys FROM import_keys WHERE project_id = ? AND hour = ?

-- name: parts_before
SELECT * FROM parts WHERE hour < ?

-- name: delete_parts_before
DELETE FROM parts WHERE hour < ?

-- name: delete_import_keys_before
DELETE FROM import_keys WHERE hour < ?

-- name: delete_part_seqs_before
DELETE FROM part_seqs WHERE hour < ?

-- name: drop_month_table
DROP TABLE {table}

-- name: delete_user_blocks_before
DELETE FROM {table} WHERE hour < ?

-- name: parts
SELECT * FROM parts WHERE project_id = ? AND hour BETWEEN ? AND ? ORDER BY hour, seq

-- name: part
SELECT * FROM parts WHERE project_id = ? AND hour = ? AND seq = ?

-- name: stored_part_seq
SELECT next FROM part_seqs WHERE project_id = ? AND hour = ?

-- name: top_part_seq
SELECT MAX(seq) FROM parts WHERE project_id = ? AND hour = ?

-- name: store_part_seq
INSERT INTO part_seqs VALUES (?, ?, ?)
ON CONFLICT(project_id, hour) DO UPDATE SET next = excluded.next

-- name: sealed_watermarks
SELECT project_id, hour, MAX(max_lsn) FROM parts GROUP BY project_id, hour

-- name: amplitude_ids_for_user
SELECT amplitude_id FROM user_links WHERE project_id = ? AND user_id = ?
UNION SELECT amplitude_id FROM id_users WHERE project_id = ? AND user_id = ?

-- name: user_blocks
SELECT amplitude_id, hour, seq, blocks, events FROM {table}
WHERE project_id = ? AND amplitude_id IN ({marks})

-- identity state ---------------------------------------------------------------------------------

-- name: load_users
SELECT user_id, amplitude_id FROM id_users WHERE project_id = ? AND user_id IN ({marks})

-- name: load_devices
SELECT device_id, amplitude_id, anonymous FROM id_devices
WHERE project_id = ? AND device_id IN ({marks})

-- name: load_props
SELECT amplitude_id, props FROM user_props WHERE project_id = ? AND amplitude_id IN ({marks})

-- name: load_group
SELECT props FROM group_props WHERE project_id = ? AND group_type = ? AND group_value = ?

-- name: save_users
INSERT OR REPLACE INTO id_users VALUES (?, ?, ?)

-- name: save_devices
INSERT OR REPLACE INTO id_devices VALUES (?, ?, ?, ?)

-- name: save_props
INSERT OR REPLACE INTO user_props VALUES (?, ?, ?)

-- name: save_groups
INSERT OR REPLACE INTO group_props VALUES (?, ?, ?, ?)

-- name: dedup_chunk_counts
-- insert_id dedup keys, packed per (hour of first sight, checkpoint); see SQLiteMetadata.
SELECT hour, count(*) FROM dedup_chunks GROUP BY hour

-- name: insert_dedup_chunk
INSERT INTO dedup_chunks(hour, keys) VALUES (?, ?)

-- name: dedup_chunks_of_hour
SELECT keys FROM dedup_chunks WHERE hour = ?

-- name: delete_dedup_hour
DELETE FROM dedup_chunks WHERE hour = ?

-- name: dedup_day_rows
-- The per-day tables of older versions, converted into chunks once.
SELECT project_id, key, seen_ms FROM {table}

-- name: drop_dedup_day
DROP TABLE IF EXISTS {table}

-- name: save_position
-- The state's log position and amplitude_id floor, which never move backwards.
INSERT INTO kv VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)

-- name: state_position
SELECT name, value FROM kv

-- name: next_amplitude_id
SELECT value FROM kv WHERE name = 'next_amplitude_id'

-- name: store_next_amplitude_id
INSERT INTO kv VALUES ('next_amplitude_id', ?)
ON CONFLICT(name) DO UPDATE SET value = excluded.value

-- name: load_dedup
SELECT hour, keys FROM dedup_chunks WHERE hour >= ? ORDER BY hour

-- name: prune_dedup
DELETE FROM dedup_chunks WHERE hour < ?

-- budgets ----------------------------------------------------------------------------------------

-- name: prune_budget
DELETE FROM budget_charges WHERE key = ? AND at <= ?

-- name: budget_charges
SELECT at, cost FROM budget_charges WHERE key = ? ORDER BY at

-- name: insert_budget_charge
INSERT INTO budget_charges VALUES (?, ?, ?)

-- DSAR requests and jobs -------------------------------------------------------------------------

-- name: create_dsar
INSERT INTO dsar_requests(org_id, user_id, amplitude_id, start_date, end_date, status, created_at)
VALUES (?, ?, ?, ?, ?, 'staging', ?)
RETURNING id, org_id, user_id, amplitude_id, start_date, end_date, status, fail_reason, outputs,
    slots, created_at, expires_at, purged

-- name: insert_job
INSERT INTO jobs(kind, ref, status, run_after, created_at) VALUES ('dsar', ?, 'queued', ?, ?)

-- name: get_dsar
SELECT id, org_id, user_id, amplitude_id, start_date, end_date, status, fail_reason, outputs,
    slots, created_at, expires_at, purged
FROM dsar_requests WHERE id = ?

-- name: start_dsar
UPDATE dsar_requests SET status = 'submitted' WHERE id = ? AND status = 'staging'

-- name: reserve_dsar_outputs
UPDATE dsar_requests SET slots = max(slots, ?) WHERE id = ?

-- name: finish_dsar
UPDATE dsar_requests SET status = 'done', fail_reason = NULL, outputs = ?,
    slots = max(slots, ?), expires_at = ? WHERE id = ?

-- name: fail_dsar
UPDATE dsar_requests SET status = 'failed', fail_reason = ?, outputs = 0, expires_at = NULL
WHERE id = ?

-- name: fail_job
UPDATE jobs SET status = 'failed', last_error = ? WHERE id = ?

-- name: expired_dsars
SELECT id, org_id, user_id, amplitude_id, start_date, end_date, status, fail_reason, outputs,
    slots, created_at, expires_at, purged
FROM dsar_requests WHERE status = 'done' AND purged = 0 AND expires_at <= ?
ORDER BY expires_at LIMIT ?

-- name: mark_dsar_purged
UPDATE dsar_requests SET purged = 1 WHERE id = ?

-- name: claim_job
-- The oldest job that is queued and due, or running with an expired lease; BEGIN IMMEDIATE
-- makes the claim exclusive.
UPDATE jobs SET status = 'running', attempts = attempts + 1, worker = ?, claimed_at = ?,
    lease_until = ?
WHERE id = (SELECT id FROM jobs
    WHERE (status = 'queued' AND run_after <= ?) OR (status = 'running' AND lease_until <= ?)
    ORDER BY run_after, id LIMIT 1)
RETURNING id, kind, ref, attempts

-- name: extend_lease
UPDATE jobs SET lease_until = ? WHERE id = ? AND worker = ? AND status = 'running'

-- name: requeue_running_jobs
UPDATE jobs SET status = 'queued', worker = NULL, lease_until = NULL WHERE status = 'running'

-- name: retry_job
UPDATE jobs SET status = 'queued', worker = NULL, lease_until = NULL, last_error = ?,
    run_after = ?, attempts = attempts - ? WHERE id = ?

-- name: complete_job
UPDATE jobs SET status = 'done' WHERE id = ?

-- part rewriting (compaction, deletion) ------------------------------------------------------

-- name: doom_blob
INSERT INTO doomed_blobs VALUES (?, ?, 0)
ON CONFLICT(key) DO UPDATE SET delete_after = excluded.delete_after, taken = 0

-- name: due_blobs
SELECT key FROM doomed_blobs WHERE delete_after <= ? ORDER BY delete_after, key LIMIT ?

-- name: take_blob
UPDATE doomed_blobs SET delete_after = ?, taken = 1 WHERE key = ?

-- name: forget_blob
DELETE FROM doomed_blobs WHERE key = ?

-- name: spare_blob
-- Only a blob no sweep has taken: a taken one may be gone already.
DELETE FROM doomed_blobs WHERE key = ? AND taken = 0

-- name: part_gen
SELECT gen, size, crc32 FROM parts WHERE project_id = ? AND hour = ? AND seq = ?

-- name: delete_part
DELETE FROM parts WHERE project_id = ? AND hour = ? AND seq = ?

-- name: delete_user_block
DELETE FROM {table} WHERE project_id = ? AND amplitude_id = ? AND hour = ? AND seq = ?

-- name: hour_import_keys
SELECT seq, keys FROM import_keys WHERE project_id = ? AND hour = ?

-- name: delete_import_keys
DELETE FROM import_keys WHERE project_id = ? AND hour = ? AND seq = ?

-- name: crowded_hours
SELECT project_id, hour FROM parts WHERE hour < ? AND (? IS NULL OR project_id = ?)
GROUP BY project_id, hour HAVING COUNT(*) >= ? AND MIN(gen) = 0 ORDER BY hour, project_id LIMIT ?
-- -- dashboard rollups ------------------------------------------------------------------------

-- name: insert_rollup_user_days
INSERT INTO rollup_user_days VALUES (?, ?, ?) ON CONFLICT DO NOTHING

-- name: insert_rollup_user_groups
INSERT INTO rollup_user_groups VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING

-- name: upsert_rollup_first_days
INSERT INTO rollup_first_days VALUES (?, ?, ?)
ON CONFLICT DO UPDATE SET day = min(day, excluded.day)

-- name: upsert_rollup_sessions
INSERT INTO rollup_sessions VALUES (?, ?, ?, ?, ?)
ON CONFLICT DO UPDATE SET first_ms = min(first_ms, excluded.first_ms),
                          last_ms = max(last_ms, excluded.last_ms)

-- name: upsert_rollup_event_types
INSERT INTO rollup_event_types VALUES (?, ?, ?, ?)
ON CONFLICT DO UPDATE SET events = events + excluded.events

-- name: active_users_per_day
SELECT day, count(*) FROM rollup_user_days
WHERE project_id = ? AND day BETWEEN ? AND ? GROUP BY day

-- name: active_users_in_range
SELECT count(DISTINCT amplitude_id) FROM rollup_user_days
WHERE project_id = ? AND day BETWEEN ? AND ?

-- name: active_group_users_per_day
SELECT day, value, count(*) FROM rollup_user_groups
WHERE project_id = ? AND group_by = ? AND day BETWEEN ? AND ? GROUP BY day, value

-- name: active_group_users_in_range
SELECT value, count(DISTINCT amplitude_id) FROM rollup_user_groups
WHERE project_id = ? AND group_by = ? AND day BETWEEN ? AND ? GROUP BY value

-- name: new_users_per_day
SELECT day, count(*) FROM rollup_first_days
WHERE project_id = ? AND day BETWEEN ? AND ? GROUP BY day

-- name: new_group_users_per_day
SELECT f.day, g.value, count(*) FROM rollup_first_days f
JOIN rollup_user_groups g ON g.project_id = f.project_id AND g.group_by = ? AND g.day = f.day
                         AND g.amplitude_id = f.amplitude_id
WHERE f.project_id = ? AND f.day BETWEEN ? AND ? GROUP BY f.day, g.value

-- name: session_totals
SELECT first_ms / 86400000, count(*), sum(last_ms - first_ms) FROM rollup_sessions
WHERE project_id = ? AND first_ms >= ? AND first_ms < ? GROUP BY first_ms / 86400000

-- name: event_type_totals
SELECT event_type, sum(CASE WHEN day BETWEEN ? AND ? THEN events ELSE 0 END)
FROM rollup_event_types WHERE project_id = ? GROUP BY event_type

-- name: subtract_rollup_event_types
UPDATE rollup_event_types SET events = max(0, events - ?)
WHERE project_id = ? AND day = ? AND event_type = ?

-- name: delete_rollup_user_days
DELETE FROM rollup_user_days WHERE project_id = ? AND amplitude_id = ?

-- name: delete_rollup_user_groups
DELETE FROM rollup_user_groups WHERE project_id = ? AND amplitude_id = ?

-- name: delete_rollup_first_days
DELETE FROM rollup_first_days WHERE project_id = ? AND amplitude_id = ?

-- name: delete_rollup_sessions
DELETE FROM rollup_sessions WHERE project_id = ? AND amplitude_id = ?

-- name: insert_annotation
INSERT INTO annotations (project_id, date, label, details, chart_id) VALUES (?, ?, ?, ?, ?)

-- name: annotations
SELECT id, project_id, date, label, details, chart_id FROM annotations
WHERE project_id = ? ORDER BY date, id
-- name: job_counts
-- How many jobs there are of each kind and status (/metrics, swell status).
SELECT kind, status, count(*) FROM jobs GROUP BY kind, status
