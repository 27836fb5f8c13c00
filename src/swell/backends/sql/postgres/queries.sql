-- Every statement PostgresMetadata runs (swell.backends.queries reads this file), with psycopg's
-- %(name)s parameters. Names match sql/sqlite/queries.sql where the statements correspond.
-- Lists travel as arrays (one statement per batch, whatever its size); {placeholders} are
-- identifiers and literals the backend composes itself (psycopg.sql), never input.

-- schema -----------------------------------------------------------------------------------------

-- name: lock_schema
-- Held (per session) while migrations run: two nodes starting at once migrate one after the other.
SELECT pg_advisory_lock(%(key)s)

-- name: unlock_schema
SELECT pg_advisory_unlock(%(key)s)

-- name: create_schema_table
CREATE TABLE IF NOT EXISTS swell_schema (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())

-- name: schema_version
SELECT coalesce(max(version), 0) FROM swell_schema

-- name: record_migration
INSERT INTO swell_schema (version, name) VALUES (%(version)s, %(name)s)

-- name: partitions
-- The partitions of a partitioned table (user_blocks, by month).
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = to_regclass(%(parent)s)

-- name: lock_partitions
-- Taken before creating or dropping a partition, so two nodes never race on one.
SELECT pg_advisory_xact_lock(%(key)s)

-- name: create_partition
CREATE TABLE IF NOT EXISTS {partition} PARTITION OF {parent} FOR VALUES FROM ({start}) TO ({end})

-- name: drop_partition
DROP TABLE IF EXISTS {partition}

-- keys -------------------------------------------------------------------------------------------

-- name: insert_org
INSERT INTO orgs (name) VALUES (%(name)s) RETURNING id

-- name: insert_key
INSERT INTO api_keys (api_key, org_id, project_id, secret_hash)
VALUES (%(api_key)s, %(org_id)s, %(project_id)s, %(secret_hash)s)

-- name: org_exists
SELECT 1 FROM orgs WHERE id = %(org_id)s

-- name: insert_project
INSERT INTO projects (org_id, name) VALUES (%(org_id)s, %(name)s) RETURNING id

-- name: delete_owner_keys
-- Every key of an org (project_id NULL) or of one project.
DELETE FROM api_keys
WHERE org_id = %(org_id)s AND project_id IS NOT DISTINCT FROM %(project_id)s::bigint

-- name: find_key
SELECT org_id, project_id, secret_hash FROM api_keys WHERE api_key = %(api_key)s

-- name: all_orgs
SELECT id FROM orgs ORDER BY id

-- name: org_projects
SELECT id FROM projects WHERE org_id = %(org_id)s ORDER BY id

-- name: list_orgs
SELECT o.id, o.name, to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
    count(p.id)
FROM orgs o LEFT JOIN projects p ON p.org_id = o.id
GROUP BY o.id ORDER BY o.id

-- name: list_projects
-- Every project (of one org, unless the org is NULL) with what its catalog holds.
SELECT p.id, p.org_id, p.name, to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
    count(parts.seq), coalesce(sum(parts.events), 0)::bigint
FROM projects p LEFT JOIN parts ON parts.project_id = p.id
WHERE %(org_id)s::bigint IS NULL OR p.org_id = %(org_id)s::bigint
GROUP BY p.id ORDER BY p.id

-- name: project_exists
-- Locked, so a part sealed or a project deleted meanwhile waits for this transaction.
SELECT 1 FROM projects WHERE id = %(project_id)s FOR UPDATE

-- name: count_project_parts
SELECT count(*) FROM parts WHERE project_id = %(project_id)s

-- name: delete_project_rows
DELETE FROM {table} WHERE project_id = %(project_id)s

-- name: delete_project_keys
DELETE FROM api_keys WHERE project_id = %(project_id)s

-- name: delete_project
DELETE FROM projects WHERE id = %(project_id)s

-- catalog and user index -------------------------------------------------------------------------

-- name: insert_part
INSERT INTO parts
    (project_id, hour, seq, size, crc32, events, min_time, max_time, max_lsn, blocks, gen)
VALUES (%(project_id)s, %(hour)s, %(seq)s, %(size)s, %(crc32)s, %(events)s, %(min_time)s,
    %(max_time)s, %(max_lsn)s, %(blocks)s, %(gen)s)

-- name: insert_user_blocks
INSERT INTO user_blocks (project_id, amplitude_id, hour, seq, blocks, events)
SELECT %(project_id)s, t.amplitude_id, %(hour)s, %(seq)s, t.blocks, t.events
FROM unnest(%(amplitude_ids)s::bigint[], %(blocks)s::bytea[], %(events)s::integer[])
    AS t(amplitude_id, blocks, events)

-- name: insert_user_links
-- Sorted, so concurrent seals that share links lock them in one order.
INSERT INTO user_links (project_id, user_id, amplitude_id)
SELECT %(project_id)s, t.user_id, t.amplitude_id
FROM unnest(%(user_ids)s::bytea[], %(amplitude_ids)s::bigint[]) AS t(user_id, amplitude_id)
ORDER BY t.user_id, t.amplitude_id
ON CONFLICT DO NOTHING

-- name: insert_import_keys
INSERT INTO import_keys (project_id, hour, seq, keys)
VALUES (%(project_id)s, %(hour)s, %(seq)s, %(keys)s)

-- name: import_keys
SELECT keys FROM import_keys WHERE project_id = %(project_id)s AND hour = %(hour)s

-- name: delete_parts_before
-- Retention: the catalog rows go first, returned so their blobs can be deleted.
DELETE FROM parts WHERE hour < %(hour)s
RETURNING project_id, hour, seq, size, crc32, events, min_time, max_time, max_lsn, blocks, gen

-- name: delete_import_keys_before
DELETE FROM import_keys WHERE hour < %(hour)s

-- name: delete_part_seqs_before
DELETE FROM part_seqs WHERE hour < %(hour)s

-- name: delete_user_blocks_before
-- What is left of the month the cutoff falls in (whole months before it are dropped).
DELETE FROM user_blocks WHERE hour < %(hour)s

-- name: parts
SELECT project_id, hour, seq, size, crc32, events, min_time, max_time, max_lsn, blocks, gen
FROM parts
WHERE project_id = %(project_id)s AND hour BETWEEN %(start_hour)s AND %(end_hour)s
ORDER BY hour, seq

-- name: allocate_part_seq
-- One statement, atomic under the row lock ON CONFLICT takes: the next number is above both the
-- stored one and every recorded part (parts recorded before any allocation count too).
INSERT INTO part_seqs AS s (project_id, hour, next)
SELECT %(project_id)s, %(hour)s, coalesce(max(seq) + 1, 0) + 1
FROM parts WHERE project_id = %(project_id)s AND hour = %(hour)s
ON CONFLICT (project_id, hour) DO UPDATE SET next = greatest(s.next, excluded.next - 1) + 1
RETURNING next - 1

-- name: sealed_watermarks
SELECT project_id, hour, max(max_lsn) FROM parts GROUP BY project_id, hour

-- name: amplitude_ids_for_user
SELECT amplitude_id FROM user_links WHERE project_id = %(project_id)s AND user_id = %(user_id)s
UNION
SELECT amplitude_id FROM id_users WHERE project_id = %(project_id)s AND user_id = %(user_id)s
ORDER BY 1

-- name: user_blocks
-- An index read in each month's partition, joined to the parts it names.
SELECT b.amplitude_id, b.blocks, b.events,
    p.project_id, p.hour, p.seq, p.size, p.crc32, p.events, p.min_time, p.max_time, p.max_lsn,
    p.blocks, p.gen
FROM user_blocks b
JOIN parts p ON p.project_id = b.project_id AND p.hour = b.hour AND p.seq = b.seq
WHERE b.project_id = %(project_id)s AND b.amplitude_id = ANY(%(amplitude_ids)s::bigint[])
ORDER BY b.amplitude_id, b.hour, b.seq

-- identity state ---------------------------------------------------------------------------------

-- name: load_users
-- One primary-key probe per key: LIMIT 1 keeps the planner from turning the lookup into a scan
-- of the project's rows (which it prefers while a table is small or its statistics stale).
SELECT k.user_id, u.amplitude_id
FROM unnest(%(keys)s::bytea[]) AS k(user_id)
CROSS JOIN LATERAL (
    SELECT amplitude_id FROM id_users
    WHERE project_id = %(project_id)s AND user_id = k.user_id LIMIT 1) AS u

-- name: load_devices
SELECT k.device_id, d.amplitude_id, d.anonymous
FROM unnest(%(keys)s::bytea[]) AS k(device_id)
CROSS JOIN LATERAL (
    SELECT amplitude_id, anonymous FROM id_devices
    WHERE project_id = %(project_id)s AND device_id = k.device_id LIMIT 1) AS d

-- name: load_props
SELECT k.amplitude_id, p.props
FROM unnest(%(keys)s::bigint[]) AS k(amplitude_id)
CROSS JOIN LATERAL (
    SELECT props FROM user_props
    WHERE project_id = %(project_id)s AND amplitude_id = k.amplitude_id LIMIT 1) AS p

-- name: load_groups
SELECT k.group_type, k.group_value, g.props
FROM unnest(%(group_types)s::bytea[], %(group_values)s::bytea[]) AS k(group_type, group_value)
CROSS JOIN LATERAL (
    SELECT props FROM group_props
    WHERE project_id = %(project_id)s AND group_type = k.group_type
        AND group_value = k.group_value LIMIT 1) AS g

-- name: save_users
INSERT INTO id_users (project_id, user_id, amplitude_id)
SELECT * FROM unnest(%(project_ids)s::bigint[], %(user_ids)s::bytea[], %(amplitude_ids)s::bigint[])
ON CONFLICT (project_id, user_id) DO UPDATE SET amplitude_id = excluded.amplitude_id

-- name: save_devices
INSERT INTO id_devices (project_id, device_id, amplitude_id, anonymous)
SELECT * FROM unnest(%(project_ids)s::bigint[], %(device_ids)s::bytea[],
    %(amplitude_ids)s::bigint[], %(anonymous)s::boolean[])
ON CONFLICT (project_id, device_id) DO UPDATE
SET amplitude_id = excluded.amplitude_id, anonymous = excluded.anonymous

-- name: save_props
INSERT INTO user_props (project_id, amplitude_id, props)
SELECT * FROM unnest(%(project_ids)s::bigint[], %(amplitude_ids)s::bigint[], %(props)s::bytea[])
ON CONFLICT (project_id, amplitude_id) DO UPDATE SET props = excluded.props

-- name: save_groups
INSERT INTO group_props (project_id, group_type, group_value, props)
SELECT * FROM unnest(%(project_ids)s::bigint[], %(group_types)s::bytea[],
    %(group_values)s::bytea[], %(props)s::bytea[])
ON CONFLICT (project_id, group_type, group_value) DO UPDATE SET props = excluded.props

-- name: insert_dedup_chunk
INSERT INTO dedup_chunks (hour, keys)
SELECT * FROM unnest(%(hours)s::integer[], %(keys)s::bytea[])

-- name: merge_dedup_hours
-- Every hour before the newest saved that has several chunks becomes one chunk.
WITH many AS (
    SELECT hour FROM dedup_chunks WHERE hour < %(newest)s GROUP BY hour HAVING count(*) > 1),
gone AS (
    DELETE FROM dedup_chunks d USING many WHERE d.hour = many.hour RETURNING d.hour, d.keys)
INSERT INTO dedup_chunks (hour, keys)
SELECT hour, string_agg(keys, ''::bytea) FROM gone GROUP BY hour

-- name: save_position
-- The state's log position and amplitude_id floor, which never move backwards.
INSERT INTO kv AS k (name, value)
VALUES ('state_lsn', %(lsn)s), ('next_amplitude_id', %(next_amplitude_id)s)
ON CONFLICT (name) DO UPDATE SET value = greatest(k.value, excluded.value)

-- name: state_position
SELECT name, value FROM kv

-- name: allocate_amplitude_ids
-- One statement, atomic under the row lock ON CONFLICT takes.
INSERT INTO kv AS k (name, value)
VALUES ('next_amplitude_id', greatest(%(first)s::bigint, %(floor)s::bigint) + %(count)s::bigint)
ON CONFLICT (name) DO UPDATE SET value = greatest(k.value, %(floor)s::bigint) + %(count)s::bigint
RETURNING value - %(count)s::bigint

-- name: load_dedup
SELECT hour, keys FROM dedup_chunks WHERE hour >= %(hour)s ORDER BY hour

-- name: prune_dedup
-- Whole hours; returns how many went.
WITH gone AS (DELETE FROM dedup_chunks WHERE hour < %(hour)s RETURNING hour)
SELECT count(DISTINCT hour) FROM gone

-- budgets ----------------------------------------------------------------------------------------

-- name: lock_budget
-- The key's row lock, held to the end of the charge's transaction: charges of one key queue up.
INSERT INTO budget_keys AS b (key) VALUES (%(key)s)
ON CONFLICT (key) DO UPDATE SET key = b.key

-- name: budget_charges
-- The charges still in the window, oldest first; the ones that left it are deleted.
WITH gone AS (DELETE FROM budget_charges WHERE key = %(key)s AND at <= %(cutoff)s)
SELECT at, cost FROM budget_charges WHERE key = %(key)s AND at > %(cutoff)s ORDER BY at

-- name: insert_budget_charge
INSERT INTO budget_charges (key, at, cost) VALUES (%(key)s, %(at)s, %(cost)s)

-- DSAR requests and jobs -------------------------------------------------------------------------

-- name: create_dsar
INSERT INTO dsar_requests (org_id, user_id, amplitude_id, start_date, end_date, status, created_at)
VALUES (%(org_id)s, %(user_id)s, %(amplitude_id)s, %(start_date)s, %(end_date)s, 'staging',
    %(now)s)
RETURNING id, org_id, user_id, amplitude_id, start_date, end_date, status, fail_reason, outputs,
    slots, created_at, expires_at, purged

-- name: insert_job
INSERT INTO jobs (kind, ref, status, run_after, created_at)
VALUES ('dsar', %(ref)s, 'queued', %(now)s, %(now)s)

-- name: get_dsar
SELECT id, org_id, user_id, amplitude_id, start_date, end_date, status, fail_reason, outputs,
    slots, created_at, expires_at, purged
FROM dsar_requests WHERE id = %(id)s

-- name: start_dsar
UPDATE dsar_requests SET status = 'submitted' WHERE id = %(id)s AND status = 'staging'

-- name: reserve_dsar_outputs
UPDATE dsar_requests SET slots = greatest(slots, %(count)s) WHERE id = %(id)s

-- name: finish_dsar
UPDATE dsar_requests SET status = 'done', fail_reason = NULL, outputs = %(outputs)s,
    slots = greatest(slots, %(outputs)s), expires_at = %(expires_at)s
WHERE id = %(id)s

-- name: fail_dsar
UPDATE dsar_requests SET status = 'failed', fail_reason = %(reason)s, outputs = 0,
    expires_at = NULL
WHERE id = %(id)s

-- name: fail_job
UPDATE jobs SET status = 'failed', last_error = %(reason)s WHERE id = %(id)s

-- name: expired_dsars
SELECT id, org_id, user_id, amplitude_id, start_date, end_date, status, fail_reason, outputs,
    slots, created_at, expires_at, purged
FROM dsar_requests
WHERE status = 'done' AND NOT purged AND expires_at <= %(now)s
ORDER BY expires_at, id LIMIT %(limit)s

-- name: mark_dsar_purged
UPDATE dsar_requests SET purged = true WHERE id = %(id)s

-- name: claim_job
-- The oldest job that is queued and due, or running with an expired lease. SKIP LOCKED: claims
-- from other connections never wait on, nor take, the row another claim is taking.
WITH next AS (
    SELECT id FROM jobs
    WHERE (status = 'queued' AND run_after <= %(now)s)
        OR (status = 'running' AND lease_until <= %(now)s)
    ORDER BY run_after, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED)
UPDATE jobs SET status = 'running', attempts = attempts + 1, worker = %(worker)s,
    claimed_at = %(now)s, lease_until = %(lease_until)s
FROM next WHERE jobs.id = next.id
RETURNING jobs.id, jobs.kind, jobs.ref, jobs.attempts

-- name: extend_lease
UPDATE jobs SET lease_until = %(lease_until)s
WHERE id = %(id)s AND worker = %(worker)s AND status = 'running'

-- name: requeue_running_jobs
UPDATE jobs SET status = 'queued', worker = NULL, lease_until = NULL WHERE status = 'running'

-- name: retry_job
UPDATE jobs SET status = 'queued', worker = NULL, lease_until = NULL, last_error = %(error)s,
    run_after = %(run_after)s, attempts = attempts - %(uncounted)s
WHERE id = %(id)s

-- name: complete_job
UPDATE jobs SET status = 'done' WHERE id = %(id)s

-- scale-out: inbox, leases, frames, seal requests (backends/postgres.py, Cluster) -----------------

-- name: append_inbox
INSERT INTO inbox (day, project_id, payload) VALUES (%(day)s, %(project_id)s, %(payload)s)
RETURNING seq

-- name: read_inbox
SELECT seq, payload FROM inbox WHERE project_id = %(project_id)s AND seq > %(after)s
ORDER BY seq LIMIT %(limit)s

-- name: inbox_head
-- The last request acknowledged for a project (every row is committed before its 200).
SELECT coalesce(max(seq), 0) FROM inbox WHERE project_id = %(project_id)s

-- name: acquire_lease
-- A free or expired lease (or the caller's own, or any with steal) goes to the caller with the
-- next epoch; otherwise no row comes back.
INSERT INTO project_leases AS l (project_id, owner, epoch, expires_at)
VALUES (%(project_id)s, %(owner)s, 1, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (project_id) DO UPDATE
SET owner = excluded.owner, epoch = l.epoch + 1, expires_at = excluded.expires_at
WHERE l.expires_at < now() OR l.owner = excluded.owner OR %(steal)s
RETURNING epoch

-- name: renew_lease
UPDATE project_leases SET expires_at = now() + make_interval(secs => %(ttl)s)
WHERE project_id = %(project_id)s AND owner = %(owner)s AND epoch = %(epoch)s
RETURNING epoch

-- name: release_lease
UPDATE project_leases SET expires_at = now()
WHERE project_id = %(project_id)s AND owner = %(owner)s AND epoch = %(epoch)s

-- name: check_lease
-- The fence: in every write transaction of an owner. FOR SHARE holds off a steal until it ends.
SELECT 1 FROM project_leases
WHERE project_id = %(project_id)s AND owner = %(owner)s AND epoch = %(epoch)s FOR SHARE

-- name: leases
SELECT project_id, owner, epoch, expires_at > now() FROM project_leases

-- name: project_position
SELECT inbox_pos, state_lsn FROM project_positions WHERE project_id = %(project_id)s

-- name: save_project_state_lsn
INSERT INTO project_positions AS p (project_id, state_lsn) VALUES (%(project_id)s, %(lsn)s)
ON CONFLICT (project_id) DO UPDATE SET state_lsn = greatest(p.state_lsn, excluded.state_lsn)

-- name: save_next_amplitude_id
INSERT INTO kv AS k (name, value) VALUES ('next_amplitude_id', %(next_amplitude_id)s)
ON CONFLICT (name) DO UPDATE SET value = greatest(k.value, excluded.value)

-- name: save_inbox_pos
INSERT INTO project_positions AS p (project_id, inbox_pos) VALUES (%(project_id)s, %(pos)s)
ON CONFLICT (project_id) DO UPDATE SET inbox_pos = greatest(p.inbox_pos, excluded.inbox_pos)

-- name: insert_frames
INSERT INTO frames (project_id, lsn, kind, hour, body)
SELECT %(project_id)s, * FROM unnest(
    %(lsns)s::bigint[], %(kinds)s::smallint[], %(hours)s::integer[], %(bodies)s::bytea[])

-- name: read_frames
SELECT lsn, kind, hour, body FROM frames WHERE project_id = %(project_id)s ORDER BY lsn

-- name: release_frames
DELETE FROM frames WHERE project_id = %(project_id)s AND lsn <= %(upto)s

-- name: request_seal
INSERT INTO seal_requests (project_id, upto) VALUES (%(project_id)s, %(upto)s) RETURNING id

-- name: seal_request_done
SELECT done_at IS NOT NULL FROM seal_requests WHERE id = %(id)s

-- name: pending_seals
SELECT project_id, max(upto) FROM seal_requests
WHERE project_id = ANY(%(project_ids)s) AND done_at IS NULL GROUP BY project_id

-- name: complete_seals
UPDATE seal_requests SET done_at = now()
WHERE project_id = %(project_id)s AND upto <= %(upto)s AND done_at IS NULL

-- name: forget_seal_requests
DELETE FROM seal_requests WHERE created_at < now() - interval '1 hour'

-- name: notify
SELECT pg_notify(%(channel)s, %(payload)s)

-- name: inbox_partitions_droppable
-- Day partitions every row of which its project's owner has consumed.
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'inbox'::regclass AND c.relname <> 'inbox_default'

-- name: inbox_partition_pending
SELECT 1 FROM {partition} i LEFT JOIN project_positions p USING (project_id)
WHERE i.seq > coalesce(p.inbox_pos, 0) LIMIT 1

-- name: create_inbox_default
CREATE TABLE IF NOT EXISTS inbox_default PARTITION OF inbox DEFAULT

-- name: create_inbox_partition
CREATE TABLE IF NOT EXISTS {partition} PARTITION OF inbox FOR VALUES FROM ({start}) TO ({end})

-- name: delete_consumed_default_rows
DELETE FROM inbox_default i USING project_positions p
WHERE i.project_id = p.project_id AND i.seq <= p.inbox_pos

-- part rewriting (compaction, deletion) ------------------------------------------------------

-- name: doom_blobs
INSERT INTO doomed_blobs (key, delete_after)
SELECT k, %(delete_after)s FROM unnest(%(keys)s::text[]) AS k ORDER BY k
ON CONFLICT (key) DO UPDATE SET delete_after = excluded.delete_after, taken = false

-- name: take_doomed_blobs
-- Taken and put off at once: concurrent sweepers never take the same key.
UPDATE doomed_blobs SET taken = true, delete_after = %(retry_at)s WHERE key IN (
    SELECT key FROM doomed_blobs WHERE delete_after <= %(now)s
    ORDER BY delete_after, key LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING key

-- name: forget_blobs
DELETE FROM doomed_blobs WHERE key = ANY(%(keys)s::text[])

-- name: spare_blobs
-- Only blobs no sweep has taken: a taken one may be gone already.
DELETE FROM doomed_blobs WHERE key = ANY(%(keys)s::text[]) AND NOT taken RETURNING key

-- name: lock_hour_parts
-- The rewrite's (project, hour) rows, locked: a concurrent rewrite of the hour waits, then sees
-- what this one committed.
SELECT seq, gen, size, crc32 FROM parts
WHERE project_id = %(project_id)s AND hour = %(hour)s ORDER BY seq FOR UPDATE

-- name: delete_hour_parts
DELETE FROM parts
WHERE project_id = %(project_id)s AND hour = %(hour)s AND seq = ANY(%(seqs)s::integer[])

-- name: delete_hour_user_blocks
DELETE FROM user_blocks
WHERE project_id = %(project_id)s AND hour = %(hour)s AND seq = ANY(%(seqs)s::integer[])
    AND amplitude_id = ANY(%(amplitude_ids)s::bigint[])

-- name: delete_hour_import_keys
DELETE FROM import_keys
WHERE project_id = %(project_id)s AND hour = %(hour)s AND seq = ANY(%(seqs)s::integer[])
RETURNING keys

-- name: crowded_hours
SELECT project_id, hour FROM parts
WHERE hour < %(before_hour)s AND (%(project_id)s::bigint IS NULL OR project_id = %(project_id)s)
GROUP BY project_id, hour HAVING count(*) >= %(min_parts)s AND min(gen) = 0
ORDER BY hour, project_id LIMIT %(limit)s
-- -- dashboard rollups ------------------------------------------------------------------------

-- name: insert_rollup_user_days
INSERT INTO rollup_user_days (project_id, day, amplitude_id)
SELECT %(project_id)s, t.day, t.amplitude_id
FROM unnest(%(days)s::integer[], %(amplitude_ids)s::bigint[]) AS t(day, amplitude_id)
ON CONFLICT DO NOTHING

-- name: insert_rollup_user_groups
INSERT INTO rollup_user_groups (project_id, group_by, day, value, amplitude_id)
SELECT %(project_id)s, t.group_by, t.day, t.value, t.amplitude_id
FROM unnest(%(group_bys)s::text[], %(days)s::integer[], %(values)s::bytea[],
            %(amplitude_ids)s::bigint[]) AS t(group_by, day, value, amplitude_id)
ON CONFLICT DO NOTHING

-- name: upsert_rollup_first_days
INSERT INTO rollup_first_days AS f (project_id, amplitude_id, day)
SELECT %(project_id)s, t.amplitude_id, t.day
FROM unnest(%(amplitude_ids)s::bigint[], %(days)s::integer[]) AS t(amplitude_id, day)
ON CONFLICT (project_id, amplitude_id) DO UPDATE SET day = least(f.day, excluded.day)

-- name: upsert_rollup_sessions
INSERT INTO rollup_sessions AS s (project_id, amplitude_id, session_id, first_ms, last_ms)
SELECT %(project_id)s, t.amplitude_id, t.session_id, t.first_ms, t.last_ms
FROM unnest(%(amplitude_ids)s::bigint[], %(session_ids)s::bigint[], %(firsts)s::bigint[],
            %(lasts)s::bigint[]) AS t(amplitude_id, session_id, first_ms, last_ms)
ON CONFLICT (project_id, amplitude_id, session_id) DO UPDATE
SET first_ms = least(s.first_ms, excluded.first_ms), last_ms = greatest(s.last_ms, excluded.last_ms)

-- name: upsert_rollup_event_types
INSERT INTO rollup_event_types AS e (project_id, day, event_type, events)
SELECT %(project_id)s, t.day, t.event_type, t.events
FROM unnest(%(days)s::integer[], %(event_types)s::bytea[], %(events)s::bigint[])
     AS t(day, event_type, events)
ON CONFLICT (project_id, day, event_type) DO UPDATE SET events = e.events + excluded.events

-- name: active_users_per_day
SELECT day, count(*) FROM rollup_user_days
WHERE project_id = %(project_id)s AND day BETWEEN %(first)s AND %(last)s GROUP BY day

-- name: active_users_in_range
SELECT count(DISTINCT amplitude_id) FROM rollup_user_days
WHERE project_id = %(project_id)s AND day BETWEEN %(first)s AND %(last)s

-- name: active_group_users_per_day
SELECT day, value, count(*) FROM rollup_user_groups
WHERE project_id = %(project_id)s AND group_by = %(group_by)s
  AND day BETWEEN %(first)s AND %(last)s
GROUP BY day, value

-- name: active_group_users_in_range
SELECT value, count(DISTINCT amplitude_id) FROM rollup_user_groups
WHERE project_id = %(project_id)s AND group_by = %(group_by)s
  AND day BETWEEN %(first)s AND %(last)s
GROUP BY value

-- name: new_users_per_day
SELECT day, count(*) FROM rollup_first_days
WHERE project_id = %(project_id)s AND day BETWEEN %(first)s AND %(last)s GROUP BY day

-- name: new_group_users_per_day
SELECT f.day, g.value, count(*) FROM rollup_first_days f
JOIN rollup_user_groups g ON g.project_id = f.project_id AND g.group_by = %(group_by)s
                         AND g.day = f.day AND g.amplitude_id = f.amplitude_id
WHERE f.project_id = %(project_id)s AND f.day BETWEEN %(first)s AND %(last)s
GROUP BY f.day, g.value

-- name: session_totals
SELECT (first_ms / 86400000)::integer, count(*), sum(last_ms - first_ms)::bigint
FROM rollup_sessions
WHERE project_id = %(project_id)s AND first_ms >= %(start_ms)s AND first_ms < %(end_ms)s
GROUP BY 1

-- name: event_type_totals
SELECT event_type, sum(CASE WHEN day BETWEEN %(first)s AND %(last)s THEN events ELSE 0 END)::bigint
FROM rollup_event_types WHERE project_id = %(project_id)s GROUP BY event_type

-- name: subtract_rollup_event_types
UPDATE rollup_event_types AS e SET events = greatest(0, e.events - t.events)
FROM unnest(%(days)s::integer[], %(event_types)s::bytea[], %(events)s::bigint[])
     AS t(day, event_type, events)
WHERE e.project_id = %(project_id)s AND e.day = t.day AND e.event_type = t.event_type

-- name: delete_rollup_user_days
DELETE FROM rollup_user_days
WHERE project_id = %(project_id)s AND amplitude_id = ANY(%(amplitude_ids)s::bigint[])

-- name: delete_rollup_user_groups
DELETE FROM rollup_user_groups
WHERE project_id = %(project_id)s AND amplitude_id = ANY(%(amplitude_ids)s::bigint[])

-- name: delete_rollup_first_days
DELETE FROM rollup_first_days
WHERE project_id = %(project_id)s AND amplitude_id = ANY(%(amplitude_ids)s::bigint[])

-- name: delete_rollup_sessions
DELETE FROM rollup_sessions
WHERE project_id = %(project_id)s AND amplitude_id = ANY(%(amplitude_ids)s::bigint[])

-- name: insert_annotation
INSERT INTO annotations (project_id, date, label, details, chart_id)
VALUES (%(project_id)s, %(date)s, %(label)s, %(details)s, %(chart_id)s)
RETURNING id

-- name: annotations
SELECT id, project_id, date, label, details, chart_id FROM annotations
WHERE project_id = %(project_id)s ORDER BY date, id
-- name: job_counts
-- How many jobs there are of each kind and status (/metrics, swell status).
SELECT kind, status, count(*) FROM jobs GROUP BY kind, status
