-- The catalog, user links, identity state, DSAR requests and jobs, as first released.
-- Every statement tolerates a database that already has these tables (user_version 0).
CREATE TABLE IF NOT EXISTS orgs (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY, org_id INTEGER NOT NULL REFERENCES orgs(id), name TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE IF NOT EXISTS api_keys (
    api_key TEXT PRIMARY KEY, org_id INTEGER NOT NULL REFERENCES orgs(id),
    project_id INTEGER REFERENCES projects(id), secret_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parts (
    project_id INTEGER NOT NULL, hour INTEGER NOT NULL, seq INTEGER NOT NULL,
    size INTEGER NOT NULL, crc32 INTEGER NOT NULL, events INTEGER NOT NULL,
    min_time TEXT NOT NULL, max_time TEXT NOT NULL, max_lsn INTEGER NOT NULL, blocks BLOB NOT NULL,
    PRIMARY KEY (project_id, hour, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_links (
    project_id INTEGER NOT NULL, user_id TEXT NOT NULL, amplitude_id INTEGER NOT NULL,
    PRIMARY KEY (project_id, user_id, amplitude_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS id_users (
    project_id INTEGER NOT NULL, user_id TEXT NOT NULL, amplitude_id INTEGER NOT NULL,
    PRIMARY KEY (project_id, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS id_devices (
    project_id INTEGER NOT NULL, device_id TEXT NOT NULL, amplitude_id INTEGER NOT NULL,
    anonymous INTEGER NOT NULL, PRIMARY KEY (project_id, device_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_props (
    project_id INTEGER NOT NULL, amplitude_id INTEGER NOT NULL, props BLOB NOT NULL,
    PRIMARY KEY (project_id, amplitude_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_props (
    project_id INTEGER NOT NULL, group_type TEXT NOT NULL, group_value TEXT NOT NULL,
    props BLOB NOT NULL, PRIMARY KEY (project_id, group_type, group_value)) WITHOUT ROWID;
DROP TABLE IF EXISTS dedup;
CREATE TABLE IF NOT EXISTS kv (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dsar_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, org_id INTEGER NOT NULL REFERENCES orgs(id),
    user_id TEXT, amplitude_id INTEGER, start_date TEXT NOT NULL, end_date TEXT NOT NULL,
    status TEXT NOT NULL, fail_reason TEXT, outputs INTEGER NOT NULL DEFAULT 0,
    slots INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, expires_at TEXT,
    purged INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS dsar_requests_expiry ON dsar_requests(expires_at)
    WHERE status = 'done' AND purged = 0;
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, ref INTEGER NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, run_after TEXT NOT NULL,
    worker TEXT, claimed_at TEXT, last_error TEXT, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs(status, run_after, id);
